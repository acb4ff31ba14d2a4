"""P6: a CI pull-request job warm from an exported base, and copy_hits both ways.

A benchmark program (not a test). The "main" job type-checks a real project in one
checkout through the store and exports it (``metastore export``); the "PR" job runs in a
fresh checkout at another path, with an empty top, a fresh --cache-dir and the export as
an immutable base. Compared with stock mypy's warm run in its own (same) directory,
interleaved (stock, store, stock, store, ...); every output is compared with
``mypy --no-incremental``. Then copy_hits off vs on: the first PR run's time and the top's
size after it, and a second run with the top alone (no base).

    python benchmarks/ci_base.py [--package rich] [--version 13.7.1] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from alternate_releases import checkout as copy_release
from alternate_releases import release_tree, run
from metastore.cli.bench import fresh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="rich")
    ap.add_argument("--version", default="13.7.1")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "metastore-p6"))
    args = ap.parse_args()
    pkg = args.package.replace("-", "_")
    work = os.path.abspath(args.workdir)
    tree = release_tree(args.package, args.version, work)
    common = ["--ignore-missing-imports", "-v", pkg]
    for name in [k for k in os.environ if k.startswith("MYPY_METASTORE")]:
        del os.environ[name]

    def checkout(name: str) -> str:
        return copy_release(tree, os.path.join(work, name))

    def ours(store: str, cache: str, *bases: str) -> list[str]:
        argv = [sys.executable, "-m", "metastore.seams.dropin", "--metastore-store", store,
                "--cache-dir", cache]
        for b in bases:
            argv += ["--metastore-base", b]
        return argv + common

    main_dir = checkout("main")
    oracle = run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
                  "--ignore-missing-imports", pkg], main_dir)
    expected = (oracle[1], oracle[2])
    exact = True
    main_store = fresh(os.path.join(work, "main.db"))
    run(ours(main_store, fresh(os.path.join(work, "main-cache"))), main_dir)
    base = fresh(os.path.join(work, "base.db"))
    subprocess.run([sys.executable, "-m", "metastore", "--store", main_store, "export", base],
                   check=True, capture_output=True)
    stock_cache = fresh(os.path.join(work, "stock-cache"))
    run([sys.executable, "-m", "mypy", "--cache-dir", stock_cache, *common], main_dir)

    stock_t, ours_t, ours_n = [], [], []
    for i in range(args.runs):
        t, out, rc, _ = run([sys.executable, "-m", "mypy", "--cache-dir", stock_cache,
                             *common], main_dir)
        exact = exact and (out, rc) == expected
        stock_t.append(t)
        pr = checkout(f"pr{i}")
        t, out, rc, n = run(ours(fresh(os.path.join(work, f"pr{i}.db")),
                                 fresh(os.path.join(work, f"pr{i}-cache")),
                                 base + "?immutable=1"), pr)
        exact = exact and (out, rc) == expected
        ours_t.append(t)
        ours_n.append(n)
        shutil.rmtree(pr)

    copy: dict[str, dict[str, list[float]]] = {
        mode: {"first": [], "alone": [], "size": [], "rechecked": []} for mode in ("off", "on")}
    for _ in range(args.runs):
        for mode in ("off", "on"):
            os.environ["MYPY_METASTORE_COPY_HITS"] = "1" if mode == "on" else "0"
            pr = checkout(f"copy-{mode}")
            top = fresh(os.path.join(work, f"copy-{mode}.db"))
            t1, out, rc, _ = run(ours(top, fresh(os.path.join(work, "c1")), base), pr)
            exact = exact and (out, rc) == expected
            size = sum(os.path.getsize(top + s) for s in ("", "-wal") if os.path.exists(top + s))
            t2, out, rc, n2 = run(ours(top, fresh(os.path.join(work, "c2"))), pr)
            exact = exact and (out, rc) == expected
            for name, value in (("first", t1), ("alone", t2), ("size", size),
                                ("rechecked", n2)):
                copy[mode][name].append(value)
            shutil.rmtree(pr)
    os.environ.pop("MYPY_METASTORE_COPY_HITS", None)

    version = subprocess.run([sys.executable, "-m", "mypy", "--version"],
                             capture_output=True, text=True).stdout.strip()
    print(f"{args.package} {args.version}; {version}; {os.cpu_count()} cores; {args.runs} runs; "
          f"base {os.path.getsize(base) / 1024:.0f} KiB")
    ms, mo = statistics.median(stock_t), statistics.median(ours_t)
    print(f"P6 stock warm same dir {ms:.3f} s; PR checkout + immutable base + empty top "
          f"{mo:.3f} s; ratio {mo / ms:.2f}; re-checked {statistics.median(ours_n):.0f}")
    for mode, m in copy.items():
        print(f"copy_hits={mode}: first PR run {statistics.median(m['first']):.3f} s, top "
              f"{statistics.median(m['size']) / 1024:.0f} KiB after it; the top alone "
              f"afterwards {statistics.median(m['alone']):.3f} s, re-checked "
              f"{statistics.median(m['rechecked']):.0f}")
    print(f"all outputs equal the --no-incremental oracle: {exact}")


if __name__ == "__main__":
    main()
