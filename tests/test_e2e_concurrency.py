"""End-to-end: concurrent processes over two versions of a project on one store."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness, Pending

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()


def test_four_concurrent_processes_two_versions(harness: Harness, tmp_path: Path) -> None:
    """4 processes at once (2 on version A, 2 on B, each directory its own copy) on one empty
    store, then a second round: every output equals its oracle, no process reports a locked
    database, an INTERNAL ERROR or a traceback; the second round is fully warm."""
    h = harness
    a = gen.generate(SPEC)
    trees = {"A": a, "B": gen.version_b(a, SPEC)}
    dirs = {}
    for name, files in trees.items():
        dirs[name] = tmp_path / f"version-{name}"
        gen.write_tree(dirs[name], files)
    oracles = {name: h.oracle(d) for name, d in dirs.items()}
    assert oracles["A"].stdout != oracles["B"].stdout
    for round_no in (1, 2):
        pending: list[tuple[str, Pending]] = []
        for i, name in enumerate(("A", "B", "A", "B")):
            # Each process has its own --cache-dir: they share only the store.
            cache = tmp_path / "caches" / f"r{round_no}-p{i}"
            pending.append((name, h.start_dropin(dirs[name], cache_dir=cache)))
        results = [(name, p.wait()) for name, p in pending]
        for name, run in results:
            h.check(run, warm=(round_no == 2))
            assert h.normalise(run.stdout) == h.normalise(oracles[name].stdout)
