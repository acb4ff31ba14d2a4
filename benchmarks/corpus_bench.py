"""``metastore bench`` on a pinned real corpus of more than 300 modules: pip's own source.

A benchmark program (not a test). It fetches the pinned pip wheel from PyPI with pip into
``<workdir>/wheels`` (cached), unpacks its ``pip`` package (pip and its vendored libraries,
411 modules in pip 24.2, no third-party imports to install) into ``<workdir>/src`` and runs
``python -m metastore bench`` there: P1 cold, P2 warm, P3 copy, P5 one edit and P7
concurrent runs, stock mypy and the store interleaved in one process tree, every output
compared with ``mypy --no-incremental`` (see ``metastore/cli/bench.py``). It prints the table
(or the JSON) that command prints.

    python benchmarks/corpus_bench.py [--package pip] [--version 24.2] [--runs 5]
        [--concurrency 8] [--json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from alternate_releases import release_tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="pip", help="a pure-Python wheel on PyPI (default pip)")
    ap.add_argument("--version", default="24.2")
    ap.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    ap.add_argument("--concurrency", type=int, default=8,
                    help="P7: processes at once (default 8, as scenarios.md says)")
    ap.add_argument("--json", action="store_true", help="print metastore bench's JSON")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "metastore-bench"))
    args = ap.parse_args()
    pkg = args.package.replace("-", "_")
    tree = release_tree(args.package, args.version, os.path.abspath(args.workdir))
    modules = sum(name.endswith((".py", ".pyi"))
                  for _, _, names in os.walk(os.path.join(tree, pkg)) for name in names)
    print(f"corpus: {args.package} {args.version} from PyPI, {modules} modules in {tree}",
          flush=True)
    argv = [sys.executable, "-m", "metastore", "bench", "--runs", str(args.runs),
            "--concurrency", str(args.concurrency), *(["--json"] if args.json else []),
            "--", pkg]
    sys.exit(subprocess.run(argv, cwd=tree).returncode)


if __name__ == "__main__":
    main()
