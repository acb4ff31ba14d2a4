"""End-to-end: run snapshot deltas (issue 16). After an edit a run writes the records that
changed beside the checkout's full snapshot (which stays as it was), cumulatively; a warm
run after it writes nothing; a delta that grows past its bound is compacted into a new full
snapshot, and the stale delta is never applied to it. Real mypy, real SQLite, real
processes; every run compared with ``mypy --no-incremental``."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness

from metastore.mypy import run_snapshot, snapshot_delta
from metastore.mypy.source_files import RACY_SUBSECOND_SECONDS

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()
FULL, DELTA = "run-snapshot", "run-snapshot-delta"


def _slots(store: Path) -> dict[str, list[tuple[bytes, float, bytes]]]:
    """kind -> [(key, mtime, data)] of the store's snapshot slots."""
    c = sqlite3.connect(str(store))
    try:
        rows = c.execute("SELECT kind, key, mtime, data FROM slots WHERE kind LIKE 'run-%' "
                         "ORDER BY key").fetchall()
    finally:
        c.close()
    out: dict[str, list[tuple[bytes, float, bytes]]] = {}
    for kind, key, mtime, data in rows:
        out.setdefault(kind, []).append((bytes(key), float(mtime), bytes(data)))
    return out


def _delta(store: Path) -> snapshot_delta.Delta:
    (only,) = _slots(store)[DELTA]
    delta = snapshot_delta.decode(only[2])
    assert delta is not None
    return delta


def _checksum(data: bytes) -> bytes:
    full = run_snapshot.decode(data)
    assert full is not None
    return full.checksum


def _stem(path: str) -> str:
    return path.removesuffix(".py")


def _write(root: Path, files: dict[str, str]) -> None:
    """``files`` into the tree, each file written dated in the past (so that its stat
    signature is trusted at once, and a run records the same snapshot as the next one
    would: see metastore.mypy.source_files.old_enough)."""
    past = time.time() - 60
    for rel in gen.write_tree(root, files):
        if (root / rel).exists():
            os.utime(root / rel, (past, past))
    time.sleep(2 * RACY_SUBSECOND_SECONDS)  # the ctime the utime set


def _full_data(store: Path) -> list[bytes]:
    return sorted(data for _, _, data in _slots(store).get(FULL, []))


def test_edits_write_a_cumulative_delta_and_warm_runs_write_nothing(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    proj = tmp_path / "proj"
    # The leaf imports a stdlib module nothing else does: dropping the import at the end
    # leaves out one of the full snapshot's modules (same sources, so the same slot).
    plain = gen.generate(SPEC)
    leaf = gen.leaf_path(SPEC)

    def importing(files: dict[str, str]) -> dict[str, str]:
        return {**files, leaf: files[leaf] + "\nimport colorsys\n"}
    b = importing(plain)
    _write(proj, b)
    h.check(h.dropin(proj))
    h.check(h.dropin(proj), warm=True)
    before = _slots(h.store)
    assert len(before[FULL]) == 1 and DELTA not in before, before.keys()
    full = before[FULL][0][2]

    # One edit (the leaf gains an error): the full snapshot moves to a slot of its own,
    # unchanged; the checkout's slot holds a delta on it with the leaf's record.
    edited = importing(gen.edit_leaf(plain, SPEC, 1))
    _write(proj, edited)
    v, _ = h.check(h.dropin(proj))
    assert v.rechecked >= 1
    after = _slots(h.store)
    assert _full_data(h.store) == [full], "the full snapshot was rewritten"
    delta = _delta(h.store)
    assert after[DELTA][0][0] == before[FULL][0][0]  # the checkout's slot
    assert delta.base_key == after[FULL][0][0] == snapshot_delta.full_key(_checksum(full))
    assert _stem(gen.leaf_path(SPEC)) in delta.records.stems
    assert len(after[DELTA][0][2]) < len(full) // 4

    # Warm on the delta and its full snapshot: nothing re-checked, nothing written.
    h.check(h.dropin(proj), warm=True)
    assert _slots(h.store) == after, "a warm run wrote a snapshot slot"

    # A second edit (core's interface: its dependents are re-checked too): the delta on
    # the same full snapshot holds both edits.
    edited = gen.edit_core(edited, 1)
    _write(proj, edited)
    h.check(h.dropin(proj))
    assert _full_data(h.store) == [full]
    stems = set(_delta(h.store).records.stems)
    assert {_stem(gen.leaf_path(SPEC)), _stem(gen.CORE)} <= stems, stems
    h.check(h.dropin(proj), warm=True)

    # The import dropped: colorsys, one of the full snapshot's records, is gone - a delta
    # only adds and replaces records, so a full snapshot is written into the checkout's slot.
    _write(proj, gen.edit_core(plain, 1))
    h.check(h.dropin(proj))
    slots = _slots(h.store)
    assert DELTA not in slots
    (written,) = [data for key, _, data in slots[FULL] if key == before[FULL][0][0]]
    snapshot = run_snapshot.decode(written)
    assert snapshot is not None and "colorsys" not in snapshot.stems
    h.check(h.dropin(proj), warm=True)


def test_a_delta_past_its_bound_is_compacted(harness: Harness, tmp_path: Path) -> None:
    """Every module edited (more records than a delta holds): a full snapshot is written
    into the checkout's slot anew; the next edit's delta is on that one."""
    spec = gen.ProjectSpec(modules_per_package=20)
    h = harness
    proj = tmp_path / "proj"
    files = gen.generate(spec)
    _write(proj, files)
    h.check(h.dropin(proj))
    _write(proj, gen.edit_leaf(files, spec, 1))
    h.check(h.dropin(proj))
    first = _slots(h.store)
    (here, _, _), = first[DELTA]
    touched = {path: text + "# touched\n" if path.endswith(".py") else text
               for path, text in files.items()}
    assert sum(path.endswith(".py") for path in touched) > snapshot_delta.MIN_RECORDS
    _write(proj, touched)
    h.check(h.dropin(proj))
    second = _slots(h.store)
    assert DELTA not in second, "a delta was written past its bound"
    new_full = [data for key, _, data in second[FULL] if key == here]
    assert len(new_full) == 1 and new_full[0] not in _full_data_of(first)
    h.check(h.dropin(proj), warm=True)
    _write(proj, gen.edit_leaf(touched, spec, 2))
    h.check(h.dropin(proj))
    assert _delta(h.store).base_checksum == _checksum(new_full[0])
    h.check(h.dropin(proj), warm=True)


def _full_data_of(slots: dict[str, list[tuple[bytes, float, bytes]]]) -> list[bytes]:
    return [data for _, _, data in slots.get(FULL, [])]
