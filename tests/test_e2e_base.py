"""End-to-end: a read-only base store under a writable top."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p != path)


def export_copy(src: Path, dst: Path) -> None:
    """A standalone copy of the SQLite file ``src`` (including what its WAL holds), in
    rollback-journal mode, as a CI job would publish it."""
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as s, sqlite3.connect(dst) as d:
        s.backup(d)
        d.execute("PRAGMA journal_mode=DELETE")
    s.close()
    d.close()


def test_read_only_base_stays_byte_identical(harness: Harness, tmp_path: Path) -> None:
    h = harness
    files = gen.generate(SPEC)
    proj = tmp_path / "proj"
    gen.write_tree(proj, files)
    filled = tmp_path / "s1" / "store.db"
    h.check(h.dropin(proj, store=filled))

    base_dir = tmp_path / "base"
    base_dir.mkdir()
    base = base_dir / "base.db"
    export_copy(filled, base)
    base.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    before = _sha256(base)
    mtime_before = base.stat().st_mtime_ns
    top = tmp_path / "top" / "top.db"

    # A fresh checkout (another path, new mtimes) with one edit, a fresh cache dir.
    checkout = tmp_path / "ci" / "checkout"
    gen.copy_tree(proj, checkout)
    gen.write_tree(checkout, gen.edit_leaf(files, SPEC, 1))
    v, s = h.check(h.dropin(checkout, store=top, bases=[base], cache_dir=h.fresh_cache_dir()),
                   rechecked=1)
    assert v.rechecked_modules == (gen.module_name(gen.leaf_path(SPEC)),)
    assert s.offered > 0, f"nothing offered from the base: {s}"
    assert s.published >= 1 and top.exists()
    assert _sha256(base) == before and base.stat().st_mtime_ns == mtime_before
    assert _siblings(base) == [], "opening the base created files next to it (-wal/-shm?)"

    # Warm from base + top.
    h.check(h.dropin(checkout, store=top, bases=[base], cache_dir=h.fresh_cache_dir()),
            warm=True)
    assert _sha256(base) == before
    assert _siblings(base) == []
