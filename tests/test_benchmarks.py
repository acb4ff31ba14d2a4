"""Fast checks of the benchmark programs' own logic (never a timing): the P8 generator makes
the project it describes, pth_cost reads ``-X importtime`` output, and the report comparison
ignores exactly the differences stock incremental mypy has by itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import p8_large  # noqa: E402
import pth_cost  # noqa: E402

from metastore.cli.bench import report  # noqa: E402


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_p8_generator_makes_n_importable_modules_with_the_deliberate_errors(
        tmp_path: Path) -> None:
    n = 600
    files = p8_large.generate(n, seed=3)
    assert files == p8_large.generate(n, seed=3)  # deterministic
    modules = sorted(p for p in files if not p.endswith("__init__.py"))
    assert modules == sorted(p8_large.module_path(i) for i in range(n))
    assert len({p.split("/")[1] for p in modules}) == 6  # 100 modules per subpackage
    _write(tmp_path, files)
    names = [p[:-3].replace("/", ".") for p in modules]
    check = ("import importlib, sys\n"
             f"for name in {names!r}:\n"
             "    m = importlib.import_module(name)\n"
             "    s = name.split('.')\n"
             "    f = getattr(m, 'f_' + str(int(s[1][1:])) + '_' + str(int(s[2][1:])))\n"
             "    assert isinstance(f(1), int)\n"
             "print(len(sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    env["MYPY_METASTORE"] = "0"
    mypy = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir",
                           os.devnull, "proj"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)
    errors = [line for line in mypy.stdout.splitlines() if ": error:" in line]
    # Module 499 (the 500th) holds the only deliberate error of a 600-module project.
    assert errors == [f"{p8_large.module_path(499)}:{_bad_line(files)}: error: Incompatible "
                      'types in assignment (expression has type "int", variable has type '
                      '"str")  [assignment]'], mypy.stdout
    assert mypy.returncode == 1


def _bad_line(files: dict[str, str]) -> int:
    lines = files[p8_large.module_path(499)].splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith("bad_"))


def test_pth_cost_reads_importtime_lines() -> None:
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       443 |        930 | encodings\n"
              "import time:       229 |        229 |   _mypy_metastore_startup\n"
              "import time:       587 |       2001 | site\n")
    assert pth_cost.importtime_of(stderr, "_mypy_metastore_startup") == (229, 229)
    assert pth_cost.importtime_of(stderr, "site") == (587, 2001)
    assert pth_cost.importtime_of(stderr, "mypy") is None


def test_report_ignores_file_order_and_only_once_notes_but_nothing_else() -> None:
    a = ("b.py:1: error: x  [misc]\n"
         "a.py:2: error: y  [misc]\n"
         "a.py:2: note: See https://mypy.readthedocs.io/en/stable/x.html\n"
         "Found 2 errors in 2 files (checked 2 source files)\n")
    b = ("a.py:2: error: y  [misc]\n"
         "b.py:1: error: x  [misc]\n"
         "Found 2 errors in 2 files (checked 2 source files)\n")
    assert report(a, 1) == report(b, 1)
    assert report(a, 1) != report(b, 2)
    assert report(a, 1) != report(b.replace("error: y", "error: z"), 1)
    assert report(a, 1) != report(b.replace("2 errors", "3 errors"), 1)
    swapped = "a.py:3: error: w  [misc]\n" + b
    assert report(swapped, 1) != report(b.replace("a.py:2: error: y  [misc]\n",
                                                  "a.py:2: error: y  [misc]\n"
                                                  "a.py:3: error: w  [misc]\n"), 1)
