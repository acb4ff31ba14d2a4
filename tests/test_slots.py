"""Slots in the store's LRU (schema 3): kinds, last-use touch, eviction with the entries by
size and by age, migration of version-2 files, and the admin commands that show and evict
them. Real apsw, real files; the CLI through its main()."""

from __future__ import annotations

import sys
from pathlib import Path

import apsw
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metastore.cli import admin  # noqa: E402
from metastore.cli import maintenance as mt  # noqa: E402
from metastore.store import slots as slot_rows  # noqa: E402
from metastore.store import sqlite as store_mod  # noqa: E402
from metastore.store.api import TOUCH_GRAIN_S, digest  # noqa: E402
from metastore.store.local import Store  # noqa: E402


def entry(i: int) -> tuple[tuple[str, bytes, bytes, list[bytes]], bytes]:
    blob = b"blob-%d-" % i * 400
    return ("ns", b"key-%d" % i, b"value-%d" % i, [digest(blob)]), blob


def used_of(s: Store, table: str, column: str = "key") -> dict[bytes, int]:
    assert s.top is not None
    return {bytes(k): int(u) for k, u in
            s.top.conn.execute(f"SELECT {column}, used FROM {table}")}


def age(s: Store, table: str, seconds: int, where: str = "1") -> None:
    """Move last-use times into the past (what time passing does)."""
    assert s.top is not None
    s.top.conn.execute(f"UPDATE {table} SET used = used - {seconds} WHERE {where}")


def test_kinds_and_sizes_in_stats(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    s.put(slots=[(b"a", 1.0, b"x" * 10, "memo"), (b"b", 1.0, b"y" * 30, "memo"),
                 (b"c", 1.0, b"z" * 5, "snap"), (b"d", 1.0, b"w")])
    assert s.stats()[0].slot_kinds == {"": (1, 1), "memo": (2, 40), "snap": (1, 5)}
    s.close()


def test_a_slot_is_touched_at_most_once_per_grain_and_only_in_the_top(tmp_path: Path) -> None:
    base_path = tmp_path / "base.db"
    b = Store(str(base_path))
    b.put(slots=[(b"in-base", 1.0, b"base", "k")])
    b.close()
    before = base_path.read_bytes()
    s = Store(str(tmp_path / "top.db"), [str(base_path)])
    s.put(slots=[(b"old", 1.0, b"o", "k"), (b"new", 1.0, b"n", "k")])
    written = used_of(s, "slots")
    age(s, "slots", TOUCH_GRAIN_S + 5, "key = x'6f6c64'")  # b"old"
    s.put(used_slots=[b"old", b"new", b"in-base"], counters={"runs": 1})
    after = used_of(s, "slots")
    assert after[b"old"] >= written[b"old"]  # touched: older than the grain
    assert after[b"new"] == written[b"new"]  # not: used within the grain already
    assert b"in-base" not in after
    s.close()
    assert base_path.read_bytes() == before  # a base is never written


def test_trim_evicts_slots_and_entries_as_one_lru(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    big = b"s" * 20000
    s.put(slots=[(b"slot-old", 1.0, big, "k"), (b"slot-new", 1.0, big, "k")])
    for i in range(4):
        e, blob = entry(i)
        s.put(entries=[e], blobs=[blob])
    # Ages: slot-old oldest, then entries 0 and 1, then slot-new, then entries 2 and 3.
    age(s, "slots", 1000, "key = x'736c6f742d6f6c64'")
    age(s, "entries", 500, "key IN (x'6b65792d30', x'6b65792d31')")
    age(s, "slots", 100, "key = x'736c6f742d6e6577'")
    assert s.top is not None
    evict_order: list[str] = []
    while True:  # trim()'s step, one at a time
        result, slots = slot_rows.evict_oldest(s.top, 1)
        if not (result.entries or slots):
            break
        evict_order.extend(["entry"] * result.entries + ["slot"] * slots)
    assert evict_order == ["slot", "entry", "entry", "slot", "entry", "entry"]
    s.close()
    # Through trim(): a cap below the size evicts the old slot first.
    s = Store(str(tmp_path / "t.db"))
    s.put(slots=[(b"old", 1.0, big * 5, "k")])
    for i in range(20):
        e, blob = entry(i)
        s.put(entries=[e], blobs=[blob])
    age(s, "slots", 1000)
    live = s.top.size().live  # type: ignore[union-attr]
    s.trim(live - 50000, grace_s=0)
    assert used_of(s, "slots") == {}
    assert len(used_of(s, "entries")) == 20  # the old slot made room alone
    counters = s.stats()[0].counters
    assert counters["evicted_slots"] == 1 and counters["evicted_slot_bytes"] == 100000
    s.close()


def test_gc_max_age_evicts_old_slots_and_entries(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.db"
    s = Store(str(path))
    s.put(slots=[(b"old", 1.0, b"o", "k"), (b"new", 1.0, b"n", "k")])
    for i in range(2):
        e, blob = entry(i)
        s.put(entries=[e], blobs=[blob])
    age(s, "slots", 3 * 86400, "key = x'6f6c64'")
    age(s, "entries", 3 * 86400, "key = x'6b65792d30'")
    s.close()
    admin.main(["--store", str(path), "gc", "--max-age", "2"])  # exits only on failure
    out = capsys.readouterr().out
    assert "evicted 1 entries and 1 slots" in out, out
    s = Store(str(path))
    assert set(used_of(s, "slots")) == {b"new"}
    assert set(used_of(s, "entries")) == {b"key-1"}
    s.close()


def make_v2(path: Path) -> None:
    """A version-2 store as version 2 wrote it (slots without kind and last use)."""
    c = apsw.Connection(str(path))
    c.execute("PRAGMA journal_mode = WAL")
    c.execute(store_mod._SCHEMA)
    c.execute(store_mod._MIGRATE_V2)
    c.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    c.execute("PRAGMA user_version = 2")
    c.execute("INSERT INTO slots (key, mtime, data) VALUES (?, ?, ?)", (b"s", 1234.5, b"d"))
    c.close()


def test_v2_base_is_read_as_is_and_v2_top_is_migrated(tmp_path: Path) -> None:
    v2 = tmp_path / "v2.db"
    make_v2(v2)
    before = v2.read_bytes()
    s = Store(None, [str(v2)])
    assert s.get_slot(b"s") == (1234.5, b"d")
    st = s.stats()[0]
    assert st.schema_version == 2 and st.slot_kinds == {"": (1, 1)}
    s.close()
    assert v2.read_bytes() == before
    s = Store(str(v2))
    assert s.stats()[0].schema_version == store_mod.SCHEMA_VERSION == 3
    assert used_of(s, "slots") == {b"s": 1234}  # last use starts as the last write
    assert s.get_slot(b"s") == (1234.5, b"d")
    assert mt.verify(s)[0].ok
    s.close()


def test_export_and_merge_keep_kinds(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "a.db"))
    s.put(slots=[(b"k1", 2.0, b"data", "memo")])
    mt.export(s, str(tmp_path / "out.db"))
    s.close()
    e = Store(None, [str(tmp_path / "out.db")])
    assert e.stats()[0].slot_kinds == {"memo": (1, 4)}
    e.close()
    d = Store(str(tmp_path / "d.db"))
    mt.merge(d, [str(tmp_path / "out.db")])
    assert d.stats()[0].slot_kinds == {"memo": (1, 4)}
    d.close()
