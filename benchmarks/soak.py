"""The store over months of use: hundreds of sandbox runs on one store with a small max_size.

A benchmark program (not a test), run by ``tox -e soak``; the short variant in the default
suite is tests/test_soak.py. See tests/helpers/soak.py for the runs: a new sandbox path
each run, three versions of a generated project in turn, a leaf edit every few runs, the
store's clock advancing an hour a run. Every output is compared with
``mypy --no-incremental``; every run on content checked before must be warm. Prints the
store's size and slot count against runs, then whether the last third grew, and runs
``metastore verify`` and ``metastore stats`` on the store at the end. Exit status 1 if a
run differed, was not warm when it had to be, or verify failed.

    python benchmarks/soak.py [--runs 500] [--max-size 5M] [--edit-every 6] [--every 25]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers import venvs  # noqa: E402
from helpers.run import Harness, Product  # noqa: E402
from helpers.soak import Point, growth, soak  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--max-size", default="5M", help="the store's max_size (default 5M)")
    ap.add_argument("--edit-every", type=int, default=6, help="runs between leaf edits")
    ap.add_argument("--every", type=int, default=25, help="print a row every N runs")
    ap.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = ap.parse_args()
    python = os.environ.get("METASTORE_E2E_PYTHON") or sys.executable
    if python == sys.executable and not venvs.has_installed_product():
        print("soak: the product is not installed in this interpreter; run it with tox -e "
              "soak or set METASTORE_E2E_PYTHON", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="metastore-soak-",
                                     dir=args.workdir) as tmp:
        harness = Harness(Path(tmp), Product(python), oracle_python=python)
        points: list[Point] = []
        print(f"soak: {args.runs} runs, max_size {args.max_size}, a leaf edit every "
              f"{args.edit_every} runs, 3 versions, new sandbox path each run")
        print(f"{'runs':>5} {'file KiB':>9} {'live KiB':>9} {'slots':>6} {'entries':>8} "
              f"{'warm runs':>10} {'s/run':>6}")
        try:
            for point in soak(harness, args.runs, max_size=args.max_size,
                              edit_every=args.edit_every):
                points.append(point)
                n = point.run + 1
                if n % args.every == 0 or n == args.runs:
                    recent = points[-args.every:]
                    warm = sum(1 for p in points if p.seen)
                    print(f"{n:>5} {point.file_bytes / 1024:>9.0f} "
                          f"{point.live_bytes / 1024:>9.0f} {point.slots:>6} "
                          f"{point.entries:>8} {warm:>10} "
                          f"{sum(p.seconds for p in recent) / len(recent):>6.2f}", flush=True)
        except AssertionError as e:
            print(f"soak: FAILED at run {len(points)}:\n{e}", file=sys.stderr)
            return 1
        warm = [p for p in points if p.seen]
        print(f"every run exact vs mypy --no-incremental: {len(points)}/{len(points)}; "
              f"runs on content seen before: {len(warm)}, all warm (0 re-checked); "
              f"runs on new content after each version's first re-checked "
              f"{max((p.rechecked for p in points[3:] if not p.seen), default=0)} modules at "
              f"most")
        file_growth = growth(points, lambda p: p.file_bytes)
        slot_growth = growth(points, lambda p: p.slots)
        print(f"peak in the last third vs the middle third: file {file_growth:+.1%}, "
              f"slots {slot_growth:+.1%} (target < +10%)")
        metastore = [python, "-m", "metastore.cli.admin", "--store", str(harness.store)]
        verify = subprocess.run([*metastore, "verify"], capture_output=True, text=True)
        print(f"metastore verify: exit {verify.returncode}: {verify.stdout.strip()}")
        stats = subprocess.run([*metastore, "stats"], capture_output=True, text=True)
        print(stats.stdout.rstrip())
        return 0 if verify.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
