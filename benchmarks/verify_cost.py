"""The cost of checking blob digests on read (issue 5): ``verify_bases`` on vs off, and the
top's always-on check.

A benchmark program (not a test). A real project is type-checked once through the store and
exported as a base. Then, interleaved, ``--runs`` times each: stock mypy's warm run in its own
directory; a warm run from the base (fresh checkout path, empty top, fresh --cache-dir) with
``MYPY_METASTORE_VERIFY_BASES=1``; the same with ``=0``; a warm run from the top alone (always
verified). Every output is compared with ``mypy --no-incremental``. Store-level figures: time
to read and check every data blob (what a run adds to be sure no damaged data reaches mypy)
against only checking that they exist.

    python benchmarks/verify_cost.py [--package rich] [--version 13.7.1] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from alternate_releases import checkout, release_tree, run
from metastore.cli.bench import fresh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="rich")
    ap.add_argument("--version", default="13.7.1")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                      "metastore-verify-cost"))
    args = ap.parse_args()
    pkg = args.package.replace("-", "_")
    work = os.path.abspath(args.workdir)
    tree = release_tree(args.package, args.version, work)
    common = ["--ignore-missing-imports", pkg]
    for name in [k for k in os.environ if k.startswith("MYPY_METASTORE")]:
        del os.environ[name]

    def ours(store: str, *bases: str) -> list[str]:
        argv = [sys.executable, "-m", "metastore.seams.dropin", "--metastore-store", store,
                "--cache-dir", fresh(os.path.join(work, "cache"))]
        for b in bases:
            argv += ["--metastore-base", b]
        return argv + common

    main_dir = checkout(tree, os.path.join(work, "main"))
    oracle = run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
                  *common], main_dir)
    expected = (oracle[1], oracle[2])
    main_store = fresh(os.path.join(work, "main.db"))
    run(ours(main_store), main_dir)
    base = fresh(os.path.join(work, "base.db"))
    subprocess.run([sys.executable, "-m", "metastore", "--store", main_store, "export", base],
                   check=True, capture_output=True)
    stock_cache = fresh(os.path.join(work, "stock-cache"))
    run([sys.executable, "-m", "mypy", "--cache-dir", stock_cache, *common], main_dir)
    pr = checkout(tree, os.path.join(work, "pr"))

    times: dict[str, list[float]] = {"stock": [], "base verify on": [],
                                     "base verify off": [], "top alone": []}
    exact = True
    for _ in range(args.runs):
        for mode in times:
            if mode == "stock":
                cmd, cwd = [sys.executable, "-m", "mypy", "--cache-dir", stock_cache,
                            *common], main_dir
            elif mode == "top alone":
                cmd, cwd = ours(main_store), main_dir
            else:
                os.environ["MYPY_METASTORE_VERIFY_BASES"] = "1" if mode.endswith("on") else "0"
                cmd, cwd = ours(fresh(os.path.join(work, "pr.db")), base), pr
            t, out, rc, _ = run(cmd, cwd)
            os.environ.pop("MYPY_METASTORE_VERIFY_BASES", None)
            exact = exact and (out, rc) == expected
            times[mode].append(t)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from metastore.store.local import Store

    c = sqlite3.connect(f"file:{base}?mode=ro", uri=True)
    data = [bytes(r[0][32:64]) for r in c.execute("SELECT refs FROM entries")]
    data_bytes = sum(int(r[0]) for r in c.execute(
        "SELECT size FROM blobs WHERE digest IN (SELECT substr(refs, 33, 32) FROM entries)"))
    c.close()
    check: dict[str, list[float]] = {"exist": [], "read+check": []}
    for _ in range(args.runs):
        for how in check:
            s = Store(None, [base])
            t0 = time.perf_counter()
            got = s.have_blobs(data) if how == "exist" else s.intact_blobs(data)
            check[how].append(time.perf_counter() - t0)
            assert len(got) == len(set(data))
            s.close()

    version = subprocess.run([sys.executable, "-m", "mypy", "--version"],
                             capture_output=True, text=True).stdout.strip()
    print(f"{args.package} {args.version}; {version}; {os.cpu_count()} cores; {args.runs} runs "
          f"interleaved; base {os.path.getsize(base) / 1024:.0f} KiB, {len(data)} units, data "
          f"blobs {data_bytes / 1024:.0f} KiB")
    stock = statistics.median(times["stock"])
    for mode, ts in times.items():
        m = statistics.median(ts)
        print(f"{mode:16s} median {m:.3f} s  ratio to stock warm {m / stock:.2f}")
    on, off = (statistics.median(times[k]) for k in ("base verify on", "base verify off"))
    print(f"verify_bases on / off: {on / off:.3f}")
    e, r = (statistics.median(check[k]) * 1000 for k in ("exist", "read+check"))
    print(f"store level, every data blob of the base: exists {e:.1f} ms, read and check "
          f"{r:.1f} ms (+{r - e:.1f} ms per run = {(r - e) / 1000 / on:.1%} of a warm run)")
    print(f"all outputs equal the --no-incremental oracle: {exact}")


if __name__ == "__main__":
    main()
