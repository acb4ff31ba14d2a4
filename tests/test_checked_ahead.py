"""Data blobs checked ahead of the build (metastore.mypy.checked_ahead and the helper process
of metastore.seams.ahead), on real stores: the answer's format, the snapshots it follows (full,
delta, derived), damaged and missing blobs, and a helper started as the drop-in starts it."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from metastore.config import Config, Setting
from metastore.mypy import run_snapshot, snapshot_delta
from metastore.mypy.checked_ahead import (
    HINT_PLACES,
    decode_answer,
    decode_hint,
    encode_answer,
    hint_key,
    hinted_slot,
    place,
    snapshot_data_digests,
    updated_hint,
)
from metastore.seams import ahead
from metastore.store.api import digest
from metastore.store.local import Store
from test_run_snapshot import ROOTS, record

BLOBS = [f"data of module {n}".encode() * 20 for n in range(3)]
DIGESTS = [digest(b) for b in BLOBS]


def records() -> list[run_snapshot.Record]:
    """Three records whose units' data blobs are BLOBS."""
    out = []
    for n, d in enumerate(DIGESTS):
        r = record(f"pkg/m{n}", f"pkg/m{n}.py")
        out.append(r._replace(unit=(r.unit[0], r.unit[1], r.unit[2], d.hex(), *r.unit[4:])))
    return out


def test_an_answer_round_trips_and_a_partial_one_is_none() -> None:
    data = encode_answer(b"h" * 64, b"c" * 32, [b"x" * 32, b"y" * 32])
    assert decode_answer(data) == (b"h" * 64, b"c" * 32, frozenset({b"x" * 32, b"y" * 32}))
    assert decode_answer(encode_answer(None, None, ())) == (None, None, frozenset())
    for bad in (b"", data[:-1], data[:40], data[:-5] + b"junk\n", b"garbage" * 20,
                data.replace(b"\x02\x00\x00\x00", b"\x03\x00\x00\x00")):
        assert decode_answer(bad) is None


def test_hint_keys_differ_by_store_and_argv() -> None:
    key = hint_key("/s.db", ["proj", "--sqlite-cache"])
    assert key == hint_key("/s.db", ["proj", "--sqlite-cache"])
    assert len({key, hint_key("/t.db", ["proj", "--sqlite-cache"]),
                hint_key("/s.db", ["proj"])}) == 3


def test_a_hint_names_a_snapshot_per_directory_most_recent_first() -> None:
    a, b, c = place("/a"), place("/b"), place("/c")
    hint = updated_hint([], a, b"1" * 32)
    assert hint is not None and decode_hint(hint) == [(a, b"1" * 32)]
    assert updated_hint(decode_hint(hint), a, b"1" * 32) is None  # nothing to write
    hint = updated_hint(decode_hint(hint), b, b"2" * 32)
    assert hint is not None and decode_hint(hint) == [(b, b"2" * 32), (a, b"1" * 32)]
    hint = updated_hint(decode_hint(hint), a, b"3" * 32)
    assert hint is not None and decode_hint(hint) == [(a, b"3" * 32), (b, b"2" * 32)]
    entries = decode_hint(hint)
    assert hinted_slot(entries, b) == b"2" * 32  # this directory's
    assert hinted_slot(entries, c) == b"3" * 32  # else the most recent
    assert hinted_slot([], c) is None
    for n in range(2 * HINT_PLACES):
        hint = updated_hint(decode_hint(hint), place(f"/{n}"), bytes([n]) * 32)
        assert hint is not None
    assert len(decode_hint(hint)) == HINT_PLACES
    assert decode_hint(b"short") == [] and decode_hint(b"") == []


def test_digests_of_a_full_a_delta_and_a_derived_snapshot() -> None:
    full = run_snapshot.encode(ROOTS, "[]", records()[:2])
    checksum = run_snapshot.decode(full).checksum  # type: ignore[union-attr]
    slots = {snapshot_delta.full_key(checksum): (0.0, full)}
    delta = snapshot_delta.encode(checksum, ROOTS, "[]", records()[2:])
    derived = run_snapshot.encode_derived(b"k" * 32, checksum, ROOTS, [(1, 2, 3, 4)] * 2)
    slots[b"k" * 32] = (0.0, full)

    assert snapshot_data_digests(full, slots.get) == (checksum, set(DIGESTS[:2]))
    found = snapshot_data_digests(delta, slots.get)
    applied = snapshot_delta.decode_any(delta, slots.get)
    assert applied is not None and found == (applied[0].checksum, set(DIGESTS))
    assert snapshot_data_digests(derived, slots.get) == (checksum, set(DIGESTS[:2]))
    assert snapshot_data_digests(delta, {}.get) is None  # its full snapshot is gone
    assert snapshot_data_digests(b"not a snapshot", slots.get) is None


def put(path: Path, **kw: Any) -> None:
    store = Store(str(path))
    try:
        store.put(**kw)
    finally:
        store.close()


def _store(path: Path, blobs: list[bytes]) -> tuple[bytes, bytes]:
    """A store at ``path`` holding ``blobs``, a snapshot of records() and a hint naming it;
    returns (hint key, snapshot checksum)."""
    data = run_snapshot.encode(ROOTS, "[]", records())
    key, hint = b"s" * 32, hint_key(str(path), ["proj"])
    put(path, blobs=blobs, slots=[(key, time.time(), data, "run-snapshot"),
                                  (hint, time.time(), place("/src") + key, "ahead-hint")])
    return hint, run_snapshot.decode(data).checksum  # type: ignore[union-attr]


def _request(path: Path, hint: bytes) -> str:
    return json.dumps({"store": str(path), "hint": hint.hex(), "place": place("/src").hex(),
                       "bases": []})


def test_the_helper_names_damaged_and_missing_blobs(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    hint, checksum = _store(path, BLOBS[:2])  # the third blob is missing
    c = sqlite3.connect(path)
    c.execute("UPDATE blobs SET data = ? WHERE digest = ?", (b"x" + BLOBS[0][1:], DIGESTS[0]))
    c.commit()
    c.close()
    answer = decode_answer(ahead.answer_request(_request(path, hint)))
    assert answer == (place("/src") + b"s" * 32, checksum, frozenset({DIGESTS[0], DIGESTS[2]}))


def test_the_helper_without_a_hint_a_snapshot_or_a_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    hint, _ = _store(path, BLOBS)
    none = (None, None, frozenset())
    assert decode_answer(ahead.answer_request(_request(path, b"o" * 32))) == none
    gone = place("/src") + b"g" * 32  # names a slot that is not there
    put(path, slots=[(hint, time.time(), gone, "ahead-hint")])
    assert decode_answer(ahead.answer_request(_request(path, hint))) == (gone, None,
                                                                        frozenset())
    assert decode_answer(ahead.answer_request(_request(tmp_path / "nothing.db", hint))) == none
    assert decode_answer(ahead.answer_request("not json")) == none
    assert not (tmp_path / "nothing.db").exists()  # the helper creates nothing


def test_a_started_helper_answers_through_a_pipe(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store.db"
    monkeypatch.chdir(tmp_path)
    argv = ["proj", "--sqlite-cache"]
    data = run_snapshot.encode(ROOTS, "[]", records())
    hint = place("/elsewhere") + b"s" * 32  # another directory's: the most recent one
    put(path, blobs=BLOBS, slots=[
        (b"s" * 32, time.time(), data, "run-snapshot"),
        (hint_key(str(path), argv), time.time(), hint, "ahead-hint")])
    config = Config(enabled=Setting(True, "test"), store=Setting(str(path), "test"),
                    bases=Setting((), "test"), stats=Setting(False, "test"))
    monkeypatch.setattr(ahead, "_current", None)
    monkeypatch.setenv(ahead.ENV_CHECK_AHEAD, "wait")  # however busy the test machine is
    ahead.start(config, argv)
    helper = ahead.current()
    assert helper is not None and helper.hint_key == hint_key(str(path), argv)
    assert helper.place == place(str(tmp_path))
    checksum = run_snapshot.decode(data).checksum  # type: ignore[union-attr]
    assert helper.answer(5.0) == (hint, checksum, frozenset())

    monkeypatch.setattr(ahead, "_current", None)
    monkeypatch.setenv(ahead.ENV_CHECK_AHEAD, "0")
    ahead.start(config, argv)
    assert ahead.current() is None


def test_a_helper_that_does_not_answer_in_time_is_no_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                               stdout=subprocess.PIPE)
    helper = ahead.Helper(process, b"h" * 32, place("/src"))
    t0 = time.monotonic()
    assert helper.answer(0.2) is None
    assert time.monotonic() - t0 < 5
    assert process.poll() is not None  # killed


def test_a_core_is_free_counts_the_tasks_runnable_now(tmp_path: Path) -> None:
    """``/proc/loadavg``'s runnable count (this process included) against the cores this
    process may use; a file that cannot be read falls back to the load average, never
    raises."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1
    loadavg = tmp_path / "loadavg"
    loadavg.write_text(f"0.50 0.40 0.30 {cores}/321 4242\n")
    assert not ahead.a_core_is_free(str(loadavg))  # every core has a task: none for a helper
    loadavg.write_text(f"9.00 9.00 9.00 {cores - 1}/321 4242\n")
    assert ahead.a_core_is_free(str(loadavg)) == (cores > 1)  # now, not the average
    loadavg.write_text("garbled\n")
    assert isinstance(ahead.a_core_is_free(str(loadavg)), bool)
    assert isinstance(ahead.a_core_is_free(str(tmp_path / "missing")), bool)


def test_no_helper_without_a_free_core_unless_waiting(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With every core busy the helper would take CPU from mypy: none is started, except
    with ``=wait`` (the tests' setting, which asks for one however busy the machine is)."""
    config = Config(enabled=Setting(True, "test"), store=Setting(str(tmp_path / "s.db"), "test"),
                    bases=Setting((), "test"), stats=Setting(False, "test"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ahead, "a_core_is_free", lambda: False)
    for mode, started in (("1", False), ("wait", True)):
        monkeypatch.setattr(ahead, "_current", None)
        monkeypatch.setenv(ahead.ENV_CHECK_AHEAD, mode)
        ahead.start(config, ["proj"])
        helper = ahead.current()
        assert (helper is not None) == started, mode
        if helper is not None:
            assert helper.answer(5.0) is not None  # it ran (an empty store: no snapshot)
