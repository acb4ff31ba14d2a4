"""The cost of the ``.pth`` startup hook: ``python -c pass`` with and without it.

A benchmark program (not a test). It builds a virtualenv in ``<workdir>/pth-venv`` holding
the product as users install it (``pip install`` of a copy of this repository, which puts
``mypy_metastore.pth`` and ``_mypy_metastore_startup.py`` into site-packages, with their
bytecode) plus mypy, apsw and blake3 at the running interpreter's versions. Then it times
``python -c pass`` in that venv with the hook present (A) and with its ``.pth`` file renamed
away (B), interleaved in pairs whose order alternates (A B, B A, ...), and prints both
medians and their difference; ``-X importtime`` then shows what importing the hook module
itself costs. Each side is first checked to be what it claims (the hook loaded, or not).

    python benchmarks/pth_cost.py [--runs 200] [--workdir DIR] [--source DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence

PTH = "mypy_metastore.pth"
HOOK_MODULE = "_mypy_metastore_startup"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean_env() -> dict[str, str]:
    """The environment of the timed processes: no PYTHON* or MYPY* variables (a venv's python
    needs neither), so nothing but the venv decides what starts."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "MYPY", "VIRTUAL_ENV"))}


def build_venv(venv: str, source: str) -> str:
    """A fresh venv at ``venv`` with the product (from a copy of ``source``) and its
    dependencies installed by pip; returns its python."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    copy = venv + "-src"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(
        ".git", ".tox", ".venv", ".ci-venv", "build", "dist", "*.egg-info", "__pycache__",
        ".mypy_cache", ".pytest_cache", ".ruff_cache", "tests"))
    deps = []
    for dist in ("mypy", "apsw", "blake3"):
        try:
            deps.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            deps.append(dist)
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run([*pip, *deps], check=True, env=clean_env())
    subprocess.run([*pip, "--no-deps", copy], check=True, env=clean_env())
    return python


def site_packages(python: str) -> str:
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])"], check=True, capture_output=True, text=True,
                         env=clean_env())
    return out.stdout.strip()


def hook_loaded(python: str) -> bool:
    out = subprocess.run([python, "-c", f"import sys; print({HOOK_MODULE!r} in sys.modules)"],
                         check=True, capture_output=True, text=True, env=clean_env())
    return out.stdout.strip() == "True"


def time_start(python: str, env: dict[str, str]) -> float:
    """Wall time of one ``python -c pass``, in seconds."""
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t0


def importtime_of(stderr: str, module: str) -> tuple[int, int] | None:
    """(self, cumulative) microseconds of ``module`` in ``python -X importtime`` output."""
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = [f.strip() for f in line[len("import time:"):].split("|")]
        if len(fields) == 3 and fields[2] == module and fields[0].isdigit():
            return int(fields[0]), int(fields[1])
    return None


def interleaved(python: str, pth: str, runs: int) -> tuple[list[float], list[float]]:
    """``runs`` timings with the hook (A) and without (B), in pairs of alternating order."""
    env = clean_env()
    off = pth + ".off"
    with_hook: list[float] = []
    without: list[float] = []
    try:
        for i in range(runs):
            for present in ((True, False) if i % 2 == 0 else (False, True)):
                if present:
                    if os.path.exists(off):
                        os.rename(off, pth)
                    with_hook.append(time_start(python, env))
                else:
                    if os.path.exists(pth):
                        os.rename(pth, off)
                    without.append(time_start(python, env))
    finally:
        if os.path.exists(off):
            os.rename(off, pth)
    return with_hook, without


def describe(values: Sequence[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return (f"median {statistics.median(values) * 1000:6.2f} ms "
            f"(quartiles {q[0] * 1000:.2f}-{q[2] * 1000:.2f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per side (default 200)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "metastore-bench"))
    ap.add_argument("--source", default=REPO, help="the repository to install (default: this)")
    args = ap.parse_args()
    if args.runs < 2:
        ap.error("--runs must be at least 2")
    venv = os.path.join(os.path.abspath(args.workdir), "pth-venv")
    python = build_venv(venv, args.source)
    pth = os.path.join(site_packages(python), PTH)
    if not os.path.isfile(pth):
        sys.exit(f"pth_cost: {pth} was not installed; is {args.source} the product's source?")
    if not hook_loaded(python):
        sys.exit(f"pth_cost: {PTH} is installed but {HOOK_MODULE} is not loaded at startup")
    os.rename(pth, pth + ".off")
    try:
        if hook_loaded(python):
            sys.exit(f"pth_cost: {HOOK_MODULE} is loaded without {PTH}; cannot measure")
    finally:
        os.rename(pth + ".off", pth)
    for _ in range(10):  # warm the page cache and the filesystem's caches for both sides
        time_start(python, clean_env())
    with_hook, without = interleaved(python, pth, args.runs)
    samples = []
    for _ in range(21):
        proc = subprocess.run([python, "-X", "importtime", "-c", "pass"], capture_output=True,
                              text=True, env=clean_env(), check=True)
        found = importtime_of(proc.stderr, HOOK_MODULE)
        if found is not None:
            samples.append(found)
    print(f"python -c pass in {venv}: Python {platform.python_version()}, "
          f"{sysconfig.get_platform()}, {os.cpu_count()} cores; {args.runs} runs per side, "
          "interleaved")
    print(f"  hook present ({PTH}): {describe(with_hook)}")
    print(f"  hook absent:           {describe(without)}")
    diff = statistics.median(with_hook) - statistics.median(without)
    print(f"  difference of medians: {diff * 1000:+.2f} ms (target: < 2 ms)")
    if samples:
        print(f"  -X importtime, {HOOK_MODULE} (median of {len(samples)}): "
              f"{statistics.median(s[0] for s in samples):.0f} us self, "
              f"{statistics.median(s[1] for s in samples):.0f} us cumulative")


if __name__ == "__main__":
    main()
