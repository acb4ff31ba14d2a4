"""Pants' way of running mypy, stock vs ``[mypy].console_script = "mypy-metastore"``.

A benchmark program (not a test), run by ``tox -e pants``. It uses the sandbox model of
``tests/helpers/pants.py`` (fresh sandbox per run, ``.cache/mypy_cache`` symlinked to one
named cache, Pants' runner script, argv and environment) with partitions = 2 resolves
(different versions of a third-party package) x up to 2 Python versions, all run at once,
for ROUNDS rounds with edits between them (cold, no edit, leaf edit, core edit, revert).
Each Python version gets its own mypy tool venv (built once under --workdir, from the
running interpreter's mypy, apsw and blake3 versions and this repository).

Every output is compared with ``mypy --no-incremental`` on the same sandbox tree; the
program exits 1 on any difference, or if with the store a round on an already checked
tree re-checks anything, or a partition re-checks a module stock mypy did not. It prints,
per round and mode, the wall time and the modules each partition re-checked, and the
store/stock wall-time ratio.

    python benchmarks/pants_sandbox.py [--rounds 5] [--versions 3.11,3.12] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers import pants, venvs  # noqa: E402


def _tool_venv(workdir: Path, version: str, interpreter: str) -> str:
    """The product + mypy venv for ``version``: the running interpreter if it is that
    version and has the product installed (tox), else a venv built once under ``workdir``."""
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version == own and venvs.has_installed_product():
        return sys.executable
    venv = workdir / f"tool-py{version}"
    python = venvs.python_in(venv)
    if not (venv.parent / f"{venv.name}.ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(venv.parent / f"{venv.name}-src", ignore_errors=True)
        venvs.build_product_venv(venv, REPO, base_python=interpreter)
        (venv.parent / f"{venv.name}.ok").write_text("")
    else:  # the product may have changed since: reinstall it (no network)
        src = venv.parent / f"{venv.name}-src"
        shutil.rmtree(src, ignore_errors=True)
        venvs.pip_install(python, ["--no-deps", "--force-reinstall",
                                   str(venvs.copy_source(REPO, src))])
    return str(python)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=len(pants.ROUNDS),
                    help=f"1..{len(pants.ROUNDS)} of: {', '.join(pants.ROUNDS)}")
    ap.add_argument("--versions", default="",
                    help="comma-separated Python versions (default: this one + one other)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                      "metastore-pants-bench"))
    args = ap.parse_args()
    found = pants.find_interpreters()
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if args.versions:
        versions = args.versions.split(",")
    else:
        versions = [own] + [v for v in ("3.12", "3.13", "3.10") if v in found and v != own][:1]
    missing = [v for v in versions if v not in found]
    if missing:
        print(f"pants_sandbox: no interpreter for Python {', '.join(missing)} on this machine "
              f"(found: {', '.join(sorted(found))})", file=sys.stderr)
        return 2
    if len(versions) == 1:
        print(f"pants_sandbox: only Python {own} found: partitions differ by resolve only",
              file=sys.stderr)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tools = {v: pants.tool_for(_tool_venv(workdir, v, found[v])) for v in versions}
    run_root = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    world = pants.PantsWorld(run_root, tools, found)
    partitions = pants.default_partitions(versions)
    rounds = pants.ROUNDS[:max(1, min(args.rounds, len(pants.ROUNDS)))]
    mypy_v = ".".join(map(str, tools[versions[0]].mypy_version))
    print(f"{len(partitions)} concurrent partitions ({', '.join(p.name for p in partitions)}), "
          f"{len(rounds)} rounds, mypy {mypy_v}, {os.cpu_count()} cores", flush=True)
    result = pants.run_campaign(world, partitions, rounds, progress=True)
    for line in pants.report(result):
        print(line)
    wrong = pants.campaign_problems(world, result)
    for problem in wrong:
        print(f"PROBLEM: {problem}")
    print("every output equalled mypy --no-incremental" if not wrong
          else f"{len(wrong)} problems")
    shutil.rmtree(run_root, ignore_errors=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
