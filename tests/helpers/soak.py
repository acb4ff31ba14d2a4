"""The soak: many sandbox runs on one store with a small ``max_size`` (benchmarks/soak.py
prints its curve; tests/test_soak.py runs a short one).

Run ``k`` checks, in a new directory written afresh (new path, new mtimes: a Pants sandbox),
version ``k % 3`` of a generated project (A, B = A with api_fn's signature changed and a
module added, C = A with the core interface extended) with the ``k // edit_every``-th leaf
edit: each tree is checked twice (runs k and k + 3) before an edit replaces it, so half the
runs check content the store has seen (they must be warm: nothing re-checked, nothing
missed) and half content it has not (the leaf is re-checked). Every output must equal
``mypy --no-incremental`` on the same content. The store's bookkeeping clock advances
``hours_per_run`` a run (``METASTORE_CLOCK_OFFSET_S``): the hourly last-use grain is
exercised as in months of use, not all within one grain.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers import gen
from helpers.run import Harness


@dataclass(frozen=True)
class Point:
    run: int
    version: str
    seen: bool  # this content was checked before in the soak (then the run must be warm)
    rechecked: int
    seconds: float
    file_bytes: int  # store file and its -wal
    live_bytes: int
    slots: int
    entries: int


def _versions(spec: gen.ProjectSpec) -> dict[str, gen.Files]:
    a = gen.generate(spec)
    return {"A": a, "B": gen.version_b(a, spec), "C": gen.edit_core(a, 1)}


def _write(root: Path, files: gen.Files) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _counts(store: Path) -> tuple[int, int, int]:
    """(live bytes, slots, entries) of the store file (read-only, outside any run)."""
    c = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        pages, free, size = (c.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        orphans = c.execute("SELECT coalesce(sum(size), 0) FROM orphans").fetchone()[0]
        slots = c.execute("SELECT count(*) FROM slots").fetchone()[0]
        entries = c.execute("SELECT count(*) FROM entries").fetchone()[0]
        return (pages - free) * size - orphans, slots, entries
    finally:
        c.close()


def soak(harness: Harness, runs: int, *, max_size: str = "5M", edit_every: int = 6,
         hours_per_run: float = 1.0, spec: gen.ProjectSpec = gen.ProjectSpec(),
         ) -> Iterator[Point]:
    """Run the soak, yielding one point per run; raises AssertionError (with the run's
    description) on the first output differing from the oracle, a problem on stderr, or a
    run on seen content that is not warm."""
    versions = _versions(spec)
    names = sorted(versions)
    seen: set[tuple[str, int]] = set()
    oracle_dirs = harness.tmp / "oracle"
    for k in range(runs):
        name, edit = names[k % len(names)], k // edit_every
        files = gen.edit_leaf(versions[name], spec, edit) if edit else versions[name]
        oracle_dir = oracle_dirs / f"{name}-{edit}"
        if not oracle_dir.exists():
            _write(oracle_dir, files)
        sandbox = harness.tmp / "sandboxes" / f"run-{k}"
        _write(sandbox, files)
        cache_dir = harness.fresh_cache_dir()
        env = {"MYPY_METASTORE_MAX_SIZE": max_size,
               "METASTORE_CLOCK_OFFSET_S": str(k * hours_per_run * 3600)}
        t0 = time.perf_counter()
        run = harness.dropin(sandbox, cache_dir=cache_dir, env=env)
        seconds = time.perf_counter() - t0
        harness.assert_clean(run)
        harness.assert_exact(run, harness.oracle(oracle_dir))
        v, s = run.verbose, run.stats
        was_seen = (name, edit) in seen
        if was_seen:
            ctx = f"run {k} ({name}, edit {edit}): {v.rechecked_modules[:10]} {s}"
            assert v.rechecked == 0 and v.build_modules == 0, f"not warm: {ctx}"
            assert s.missed == 0 and s.meta_writes == 0, f"not warm: {ctx}"
        seen.add((name, edit))
        shutil.rmtree(sandbox)
        shutil.rmtree(cache_dir, ignore_errors=True)
        if k % len(names) == len(names) - 1:  # oracle trees of content never checked again
            for old in oracle_dirs.glob(f"*-{edit - 1}"):
                shutil.rmtree(old)
        live, slots, entries = _counts(harness.store)
        file_bytes = sum(os.path.getsize(p) for p in (str(harness.store),
                                                      f"{harness.store}-wal")
                         if os.path.exists(p))
        yield Point(k, name, was_seen, v.rechecked, seconds, file_bytes, live, slots, entries)


def growth(points: list[Point], value: Callable[[Point], int]) -> float:
    """How much the peak of ``value`` in the last third of the runs exceeds its peak in the
    middle third (under a cap the size is a sawtooth - trimmed to 90 %, refilled - so
    peaks, not single points, show whether it still grows)."""
    third = len(points) // 3
    middle = max(value(p) for p in points[third:2 * third])
    return max(value(p) for p in points[2 * third:]) / max(1, middle) - 1
