"""Alternate two releases of a real project on one cache: stock mypy vs the store.

A benchmark program (not a test): it prints a table of wall times and re-checked
module counts per run, and the median ratio store/stock over runs 3 and later, all
measured in this one process tree, interleaved (stock, store, stock, store, ...).
It also checks every output against ``mypy --no-incremental`` on the same tree
(``metastore.cli.bench.report``: file order and only-once notes aside).

    python benchmarks/alternate_releases.py [--package rich] [--versions 13.7.0 13.7.1]
        [--runs 8] [--workdir DIR]

Wheels are fetched with pip into ``<workdir>/wheels`` (cached). Both tools check the
package's source tree in one working directory whose contents are switched between
the releases before every run, like ``git checkout`` of two branches.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator

from metastore.cli.bench import Report, report

SCHED = re.compile(r"LOG:  Scheduling SCC (?:singleton|of size (\d+)) \(")


def fetch(package: str, version: str, wheels: str) -> str:
    os.makedirs(wheels, exist_ok=True)
    for name in os.listdir(wheels):
        if name.lower().startswith(f"{package.replace('-', '_')}-{version}-") and name.endswith(
            ".whl"
        ):
            return os.path.join(wheels, name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            wheels,
            f"{package}=={version}",
        ],
        check=True,
    )
    return fetch(package, version, wheels)


def extract(wheel: str, package: str, dest: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith(package + "/"):
                z.extract(member, dest)


def release_tree(package: str, version: str, work: str) -> str:
    """The directory holding ``package``'s sources at ``version`` (fetched and unpacked into
    ``work`` on first use)."""
    pkg = package.replace("-", "_")
    tree = os.path.join(work, "src", f"{pkg}-{version}")
    if not os.path.isdir(os.path.join(tree, pkg)):
        extract(fetch(package, version, os.path.join(work, "wheels")), pkg, tree)
    return tree


def checkout(tree: str, dest: str) -> str:
    """A fresh copy of ``tree`` at ``dest`` (new mtimes, like a new checkout)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(tree, dest)
    return dest


def release_arguments(ap: argparse.ArgumentParser, *, runs: int) -> None:
    """The options of a benchmark on one release of a project: ``--package``,
    ``--version``, ``--runs``, ``--workdir`` and ``--busy`` (see :func:`busy_core`)."""
    ap.add_argument("--package", default="rich")
    ap.add_argument("--version", default="13.7.1")
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "metastore-bench"))
    ap.add_argument("--busy", action="store_true", help="keep one core busy while measuring")


@contextlib.contextmanager
def busy_core(busy: bool) -> Iterator[None]:
    """While in the block, if ``busy``: a process spinning at normal priority takes one
    core (the figures of a machine whose other core runs another job)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def rechecked(stderr: str) -> int:
    return sum(int(m.group(1) or 1) for m in SCHED.finditer(stderr))


def run(cmd: list[str], cwd: str) -> tuple[float, str, int, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.stdout, proc.returncode, rechecked(proc.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="rich")
    ap.add_argument("--versions", nargs=2, default=["13.7.0", "13.7.1"])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "metastore-bench"))
    args = ap.parse_args()
    pkg = args.package.replace("-", "_")
    work = os.path.abspath(args.workdir)
    trees = [release_tree(args.package, version, work) for version in args.versions]
    work_tree = os.path.join(work, "checkout")
    for d in (work_tree, os.path.join(work, "stock-cache"), os.path.join(work, "store-cache")):
        shutil.rmtree(d, ignore_errors=True)
    store = os.path.join(work, "store.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(store + suffix):
            os.remove(store + suffix)
    common = ["--ignore-missing-imports", "-v", pkg]
    stock = [
        sys.executable,
        "-m",
        "mypy",
        "--cache-dir",
        os.path.join(work, "stock-cache"),
        *common,
    ]
    ours = [
        sys.executable,
        "-m",
        "metastore.seams.dropin",
        "--metastore-store",
        store,
        "--cache-dir",
        os.path.join(work, "store-cache"),
        *common,
    ]
    oracle_cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--no-incremental",
        "--cache-dir",
        os.devnull,
        "--ignore-missing-imports",
        pkg,
    ]
    modules = 0
    oracles: dict[int, Report] = {}
    rows = []
    for i in range(args.runs):
        which = i % 2
        checkout(trees[which], work_tree)
        if which not in oracles:
            _, out, rc, _ = run(oracle_cmd, work_tree)
            oracles[which] = report(out, rc)
            modules = max(
                modules, sum(f.endswith(".py") for _, _, fs in os.walk(work_tree) for f in fs)
            )
        t_stock, out_s, rc_s, n_stock = run(stock, work_tree)
        t_ours, out_o, rc_o, n_ours = run(ours, work_tree)
        exact = report(out_o, rc_o) == oracles[which] and report(out_s, rc_s) == oracles[which]
        rows.append((i + 1, args.versions[which], t_stock, n_stock, t_ours, n_ours, exact))
    version = subprocess.run(
        [sys.executable, "-m", "mypy", "--version"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"{args.package} {args.versions[0]} <-> {args.versions[1]}: {modules} modules; "
        f"{version}; {os.cpu_count()} cores"
    )
    head = ("run", "version", "stock s", "stock re", "store s", "store re", "ratio")
    print("{:>3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} exact".format(*head))
    for n, v, ts, ns, to, no, ex in rows:
        exact = "yes" if ex else "NO"
        print(f"{n:>3} {v:>8} {ts:8.2f} {ns:8d} {to:8.2f} {no:8d} {to / ts:6.2f} {exact}")
    late = rows[2:]
    ratio = statistics.median(r[4] / r[2] for r in late)
    print(
        f"runs 3+: median ratio store/stock = {ratio:.2f}; store re-checked "
        f"{sum(r[5] for r in late)} modules, stock {sum(r[3] for r in late)}; "
        f"all exact: {all(r[6] for r in rows)}"
    )


if __name__ == "__main__":
    main()
