"""P1 cold, P2 warm and P3 copied-tree runs of one real project: stock mypy vs the store.

A benchmark program (not a test). For each scenario of ``scenarios.md`` it times stock
mypy and the store interleaved (stock, store, stock, store, ...) in this one process
tree and prints the median wall time of each, their ratio and the modules each
re-checked; every output is compared with ``mypy --no-incremental`` on the same tree.

- P1 cold: an empty cache (stock: a new --cache-dir; store: a new store file).
- P2 warm: the same directory again, nothing changed.
- P3 copy: the tree copied to a new path (new mtimes), the cache shared with the original;
  also printed against stock's P2 (its warm run in its own directory), which is what a user
  who opens a new worktree compares with.

    python benchmarks/cold_warm_copy.py [--package rich] [--version 13.7.1] [--runs 5]
        [--workdir DIR] [--busy]

``--busy`` keeps one core busy (a process spinning at normal priority) while it measures:
the figures of a machine whose other core is taken by another job.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys

from alternate_releases import checkout as copy_release
from alternate_releases import busy_core, release_arguments, release_tree, run
from metastore.cli.bench import fresh, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    release_arguments(ap, runs=5)
    args = ap.parse_args()
    pkg = args.package.replace("-", "_")
    work = os.path.abspath(args.workdir)
    tree = release_tree(args.package, args.version, work)
    common = ["--ignore-missing-imports", "-v", pkg]

    def stock(cache: str) -> list[str]:
        return [sys.executable, "-m", "mypy", "--cache-dir", cache, *common]

    def ours(store: str, cache: str) -> list[str]:
        return [sys.executable, "-m", "metastore.seams.dropin", "--metastore-store", store,
                "--cache-dir", cache, *common]

    def checkout(name: str) -> str:
        return copy_release(tree, os.path.join(work, name))

    base = checkout("checkout")
    oracle = run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
                  "--ignore-missing-imports", pkg], base)
    expected = report(oracle[1], oracle[2])
    times: dict[str, tuple[list[float], list[float], list[int], list[int]]] = {
        p: ([], [], [], []) for p in ("P1", "P2", "P3")}
    exact = True

    def measure(scenario: str, cwd: str, stock_cmd: list[str], our_cmd: list[str]) -> None:
        nonlocal exact
        t_s, out_s, rc_s, n_s = run(stock_cmd, cwd)
        t_o, out_o, rc_o, n_o = run(our_cmd, cwd)
        exact = exact and report(out_s, rc_s) == expected and report(out_o, rc_o) == expected
        ts, to, ns, no = times[scenario]
        ts.append(t_s)
        to.append(t_o)
        ns.append(n_s)
        no.append(n_o)

    stock_cache = os.path.join(work, "stock-cache")
    store_cache = os.path.join(work, "store-cache")
    store = os.path.join(work, "store.db")
    with busy_core(args.busy):
        for i in range(args.runs):
            measure("P1", base, stock(fresh(stock_cache)),
                    ours(fresh(store), fresh(store_cache)))
            measure("P2", base, stock(stock_cache), ours(store, store_cache))
            copy = checkout(f"copy{i}")
            measure("P3", copy, stock(stock_cache), ours(store, store_cache))
            shutil.rmtree(copy)
    version = subprocess.run([sys.executable, "-m", "mypy", "--version"],
                             capture_output=True, text=True).stdout.strip()
    print(f"{args.package} {args.version}; {version}; {os.cpu_count()} cores; "
          f"{args.runs} interleaved runs per scenario"
          f"{'; one core kept busy' if args.busy else ''}")
    print(f"{'':4} {'stock s':>8} {'store s':>8} {'ratio':>6} {'stock re':>8} {'store re':>8}")
    for name, (ts, to, ns, no) in times.items():
        ms, mo = statistics.median(ts), statistics.median(to)
        print(f"{name:4} {ms:8.3f} {mo:8.3f} {mo / ms:6.2f} {statistics.median(ns):8.0f} "
              f"{statistics.median(no):8.0f}")
    stock_warm, store_new_path = statistics.median(times["P2"][0]), statistics.median(
        times["P3"][1])
    print(f"P3 store at a new path vs stock's warm run in its own directory (P2): "
          f"{store_new_path:.3f} / {stock_warm:.3f} = {store_new_path / stock_warm:.2f}")
    print(f"all outputs equal the --no-incremental oracle: {exact}")


if __name__ == "__main__":
    main()
