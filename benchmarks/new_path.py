"""A new path (a fresh worktree, checkout or sandbox of the same tree) against stock mypy's
warm run in its own directory, timed as users run mypy: without ``-v``.

A benchmark program (not a test). One store is filled from the project's checkout; then,
interleaved in every round: stock mypy warm in its own directory, the store's first run in
a new copy of the tree (then removed), and the store warm in the checkout. Prints the
median wall time of each and its ratio to stock's warm run; every output is compared with
``mypy --no-incremental`` (the store's runs must re-check nothing).

    python benchmarks/new_path.py [--package rich] [--version 13.7.1] [--runs 15]
        [--workdir DIR] [--busy]

``--busy`` keeps one core busy (a process spinning at normal priority) while it measures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from alternate_releases import checkout as copy_release
from alternate_releases import busy_core, release_arguments, release_tree
from metastore.cli.bench import fresh, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    release_arguments(ap, runs=15)
    args = ap.parse_args()
    pkg = args.package.replace("-", "_")
    work = os.path.abspath(args.workdir)
    tree = release_tree(args.package, args.version, work)
    base = copy_release(tree, os.path.join(work, "new-path-checkout"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    common = ["--ignore-missing-imports", pkg]
    store = fresh(os.path.join(work, "new-path-store.db"))
    stock = [sys.executable, "-m", "mypy", "--cache-dir", fresh(os.path.join(work, "np-stock")),
             *common]
    ours = [sys.executable, "-m", "metastore.seams.dropin", "--metastore-store", store,
            "--metastore-stats", "--cache-dir", fresh(os.path.join(work, "np-store")), *common]

    def timed(argv: list[str], cwd: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        return time.perf_counter() - t0, proc

    _, oracle = timed([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir",
                       os.devnull, *common], base)
    expected = report(oracle.stdout, oracle.returncode)
    timed(stock, base)
    timed(ours, base)
    times: dict[str, list[float]] = {"stock warm, own directory": [],
                                     "store, new path": [], "store warm, own directory": []}
    exact = True

    def measure(name: str, argv: list[str], cwd: str, store_run: bool) -> None:
        nonlocal exact
        seconds, proc = timed(argv, cwd)
        times[name].append(seconds)
        exact = exact and report(proc.stdout, proc.returncode) == expected
        if store_run and "rechecked=0 " not in proc.stderr:
            exact = False

    with busy_core(args.busy):
        for i in range(args.runs):
            measure("stock warm, own directory", stock, base, False)
            copy = copy_release(tree, os.path.join(work, f"new-path-{i}"))
            measure("store, new path", ours, copy, True)
            shutil.rmtree(copy)
            measure("store warm, own directory", ours, base, True)
    version = subprocess.run([sys.executable, "-m", "mypy", "--version"],
                             capture_output=True, text=True).stdout.strip()
    print(f"{args.package} {args.version}; {version}; {os.cpu_count()} cores; {args.runs} "
          f"interleaved rounds, no -v{'; one core kept busy' if args.busy else ''}")
    stock_warm = statistics.median(times["stock warm, own directory"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28} {median:7.3f} s  {median / stock_warm:5.2f}")
    print(f"all outputs equal the --no-incremental oracle, store runs re-checked nothing: "
          f"{exact}")


if __name__ == "__main__":
    main()
