"""Unit tests of store maintenance (metastore.cli.maintenance) and the schema-2 bookkeeping of
metastore.store: real apsw, real files, real processes for the read-only cases."""

from __future__ import annotations

import io
import sqlite3
import stat
import sys
import time
from pathlib import Path

import apsw
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metastore.cli import maintenance as mt  # noqa: E402
from metastore.store import sqlite as store_mod  # noqa: E402
from metastore.cli.admin import Progress  # noqa: E402
from metastore.store.api import Base, StoreError, digest  # noqa: E402
from metastore.store.local import Store


def unit(i: int, label: str = "ns-a") -> tuple[tuple[str, bytes, bytes, list[bytes]], list[bytes]]:
    """Entry i needs its own blob and one blob shared by every entry."""
    own, shared = b"own-%d-" % i * 50, b"shared" * 100
    return (label, b"key-%d" % i, b"value-%d" % i, [digest(own), digest(shared)]), [own, shared]


def fill(s: Store, ids: list[int], label: str = "ns-a", one_by_one: bool = False) -> None:
    units = [unit(i, label) for i in ids]
    if one_by_one:
        for e, blobs in units:
            s.put(entries=[e], blobs=blobs)
    else:
        s.put(entries=[e for e, _ in units], blobs=[b for _, bl in units for b in bl])


def entry_set(path: Path) -> set[tuple[bytes, bytes]]:
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(bytes(k), bytes(v)) for k, v in c.execute("SELECT key, value FROM entries")}
    finally:
        c.close()


# -- schema 2 and migration --------------------------------------------------------------


def make_v1(path: Path, n: int) -> None:
    """A version-1 store written the way version 1 did (its schema, no refs/used)."""
    c = apsw.Connection(str(path))
    c.execute("PRAGMA journal_mode = WAL")
    c.execute(store_mod._SCHEMA)
    c.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    c.execute("PRAGMA user_version = 1")
    for i in range(n):
        e, blobs = unit(i)
        for b in blobs:
            c.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)", (digest(b), len(b), b))
        c.execute("INSERT INTO entries (label, key, value, refs, created) VALUES (?,?,?,?,?)",
                  (e[0], e[1], e[2], b"".join(e[3]), 1000 + i))
    c.close()


def test_v1_base_is_read_as_is_and_v1_top_is_migrated(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.db"
    make_v1(v1, 5)
    before = v1.read_bytes()
    s = Store(None, [str(v1)])
    assert len(s.lookup([b"key-1"])[b"key-1"]) == 1 and s.stats()[0].schema_version == 1
    s.close()
    assert v1.read_bytes() == before  # a base is never migrated
    s = Store(str(v1))
    st = s.stats()[0]
    assert (st.schema_version, st.entries) == (store_mod.SCHEMA_VERSION, 5)
    assert mt.verify(s)[0].ok  # the refs index was built from the entries
    used = s.top.conn.execute("SELECT min(used), max(used) FROM entries").fetchall()[0]
    assert used == (1000, 1004)  # last use starts as the creation time
    # Evicting the oldest entry orphans only its own blob (the shared one is still needed).
    r = s.top.evict(1)
    assert (r.entries, r.orphaned_blobs) == (1, 1)
    assert s.lookup([b"key-0"])[b"key-0"] == []
    s.close()


def test_touch_is_coarse_and_never_writes_bases(tmp_path: Path) -> None:
    base = tmp_path / "base.db"
    b = Store(str(base))
    fill(b, [0])
    b.close()
    base_bytes = base.read_bytes()
    s = Store(str(tmp_path / "top.db"), [str(base)])
    fill(s, [1])
    top_seq = s.lookup([b"key-1"])[b"key-1"][0].seq
    base_seq = s.lookup([b"key-0"])[b"key-0"][0].seq
    conn = s.top.conn
    conn.execute("UPDATE entries SET used = 5 WHERE seq = ?", (top_seq,))
    s.put(used=[(0, top_seq), (1, base_seq)])
    first = conn.execute("SELECT used FROM entries WHERE seq = ?", (top_seq,)).fetchall()[0][0]
    assert first >= time.time() - 60
    conn.execute("UPDATE entries SET used = used - 10 WHERE seq = ?", (top_seq,))
    s.put(used=[(0, top_seq)])  # within TOUCH_GRAIN_S: not rewritten
    again = conn.execute("SELECT used FROM entries WHERE seq = ?", (top_seq,)).fetchall()[0][0]
    assert again == first - 10
    assert s.lookup([b"key-0"])[b"key-0"][0].layer == 1  # not copied without copy_hits
    s.close()
    assert base.read_bytes() == base_bytes


def test_copy_hits_copies_base_entries_with_their_blobs(tmp_path: Path) -> None:
    base = tmp_path / "base.db"
    b = Store(str(base))
    fill(b, [0, 1, 2])
    b.close()
    top = tmp_path / "top.db"
    s = Store(str(top), [str(base)], copy_hits=True)
    used = [(1, s.lookup([b"key-%d" % i])[b"key-%d" % i][0].seq) for i in (0, 2)]
    s.put(used=used, counters={"x": 1})
    s.close()
    alone = Store(str(top))
    assert alone.stats()[0].counters["copied"] == 2
    assert {e.layer for k in (b"key-0", b"key-2") for e in alone.lookup([k])[k]} == {0}
    assert alone.lookup([b"key-1"])[b"key-1"] == []
    assert mt.verify(alone)[0].ok  # blobs came along: the top is self-contained
    alone.close()


def test_immutable_base_on_read_only_directory(tmp_path: Path) -> None:
    src = Store(str(tmp_path / "src.db"))
    fill(src, [0, 1])
    ro = tmp_path / "ro"
    ro.mkdir()
    mt.export(src, str(ro / "base.db"))
    src.close()
    (ro / "base.db").chmod(stat.S_IRUSR)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        before = (ro / "base.db").read_bytes()
        for immutable in (False, True):
            s = Store(str(tmp_path / f"top-{immutable}.db"),
                      [Base(str(ro / "base.db"), immutable=immutable)])
            assert len(s.lookup([b"key-1"])[b"key-1"]) == 1
            assert s.stats()[1].immutable is immutable
            s.close()
        assert sorted(p.name for p in ro.iterdir()) == ["base.db"]
        assert (ro / "base.db").read_bytes() == before
    finally:
        ro.chmod(stat.S_IRWXU)


# -- export ------------------------------------------------------------------------------


def test_export_is_deterministic_and_self_contained(tmp_path: Path) -> None:
    a = Store(str(tmp_path / "a.db"))
    fill(a, list(range(40)))
    b_base = Store(str(tmp_path / "b-base.db"))
    fill(b_base, list(range(20, 40)), one_by_one=True)
    b_base.close()
    b = Store(str(tmp_path / "b.db"), [str(tmp_path / "b-base.db")])
    time.sleep(1.1)  # other creation times
    fill(b, list(reversed(range(30))), one_by_one=True)  # other order, overlap with its base
    ra = mt.export(a, str(tmp_path / "ea.db"))
    rb = mt.export(b, str(tmp_path / "eb.db"))
    assert ra == rb and ra.entries == 40 and ra.blobs == 41
    assert (tmp_path / "ea.db").read_bytes() == (tmp_path / "eb.db").read_bytes()
    c = sqlite3.connect(tmp_path / "ea.db")
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert c.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0  # analysed
    assert c.execute("PRAGMA freelist_count").fetchone()[0] == 0  # vacuumed
    c.close()
    assert not list(tmp_path.glob("ea.db-*"))
    e = Store(None, [str(tmp_path / "ea.db")])
    assert mt.verify(e)[0].ok
    e.close()
    a.close()
    b.close()


def test_export_filters(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    fill(s, [0, 1], label="ns-a")
    fill(s, [2, 3], label="ns-b")
    s.top.conn.execute("UPDATE entries SET created = 100, used = 100 WHERE key = ?",
                       (b"key-3",))
    assert mt.export(s, str(tmp_path / "b.db"), labels=["ns-b"]).entries == 2
    assert {k for k, _ in entry_set(tmp_path / "b.db")} == {b"key-2", b"key-3"}
    r = mt.export(s, str(tmp_path / "recent.db"), since=int(time.time()) - 3600)
    assert r.entries == 3 and b"key-3" not in {k for k, _ in entry_set(tmp_path / "recent.db")}
    s.close()


# -- merge -------------------------------------------------------------------------------


def test_merge_unions_dedups_and_never_overwrites(tmp_path: Path) -> None:
    a = Store(str(tmp_path / "a.db"))
    fill(a, [0, 1, 2])
    a.put(slots=[(b"slot", 1.0, b"from-a")])
    a.close()
    d = Store(str(tmp_path / "d.db"))
    fill(d, [2, 3])
    d.put(slots=[(b"slot", 2.0, b"from-d")])
    r = mt.merge(d, [str(tmp_path / "a.db")])
    assert (r.entries, r.seen, r.skipped) == (2, 3, 0)
    assert mt.merge(d, [str(tmp_path / "a.db")]).entries == 0  # idempotent
    assert entry_set(tmp_path / "d.db") == {(b"key-%d" % i, b"value-%d" % i) for i in range(4)}
    assert d.get_slot(b"slot") == (2.0, b"from-d")  # not overwritten
    assert mt.verify(d)[0].ok
    with pytest.raises(StoreError, match="destination itself"):
        mt.merge(d, [str(tmp_path / "d.db")])
    d.close()


def _writer(path: str, lo: int, hi: int) -> None:
    s = Store(path)
    for i in range(lo, hi):
        fill(s, [i])
    s.close()


def test_merge_while_another_process_writes(tmp_path: Path) -> None:
    import multiprocessing

    src = Store(str(tmp_path / "src.db"))
    fill(src, list(range(0, 1500)))
    src.close()
    dest = str(tmp_path / "d.db")
    Store(dest).close()
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_writer, args=(dest, 2000, 2300))
    p.start()
    d = Store(dest)
    mt.merge(d, [str(tmp_path / "src.db")])
    d.close()
    p.join(120)
    assert p.exitcode == 0
    want = {(b"key-%d" % i, b"value-%d" % i) for i in [*range(1500), *range(2000, 2300)]}
    assert entry_set(tmp_path / "d.db") == want
    d = Store(dest)
    assert mt.verify(d)[0].ok
    d.close()


# -- gc ----------------------------------------------------------------------------------


def test_gc_evicts_least_recently_used_and_keeps_shared_blobs_for_the_grace(
        tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    fill(s, list(range(10)))
    conn = s.top.conn
    for i in range(10):  # entry i last used at time 1000 + i, except entry 0: just now
        conn.execute("UPDATE entries SET used = ? WHERE key = ?",
                     (int(time.time()) if i == 0 else 1000 + i, b"key-%d" % i))
    r = mt.gc(s, older_than_s=86400)
    assert r.entries == 9 and r.blobs == 0  # blobs wait for the grace period
    (left,) = [k for k, _ in entry_set(tmp_path / "s.db")]
    assert left == b"key-0"
    # A reader that chose key-5 before gc still finds its blobs.
    assert s.get_blob(digest(b"own-5-" * 50)) is not None
    r = mt.gc(s, max_size=None, grace_s=0)
    assert r.blobs == 9  # own blobs of 1..9; the shared one is still needed by key-0
    assert s.get_blob(digest(b"shared" * 100)) is not None
    assert mt.verify(s)[0].ok
    s.close()


def test_cap_holds_when_puts_trim(tmp_path: Path) -> None:
    empty = Store(str(tmp_path / "empty.db"))
    cap = empty.top.size().live + 256 * 1024  # 256 KiB of entries (pages are large)
    empty.close()
    s = Store(str(tmp_path / "s.db"), max_size=cap)
    for batch in range(40):
        fill(s, list(range(batch * 20, batch * 20 + 20)))
        assert s.top.size().live <= cap + 64 * 1024  # at most one put's worth over
    st = s.stats()[0]
    assert st.counters["evicted_entries"] > 0 and st.entries < 800
    assert mt.verify(s)[0].ok
    s.close()


# -- verify ------------------------------------------------------------------------------


def test_verify_finds_and_repair_removes_only_what_is_broken(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    fill(s, list(range(6)))
    conn = s.top.conn
    conn.execute("UPDATE blobs SET data = x'00' WHERE digest = ?", (digest(b"own-1-" * 50),))
    conn.execute("DELETE FROM blobs WHERE digest = ?", (digest(b"own-2-" * 50),))
    conn.execute("DELETE FROM refs WHERE seq = 4")  # a damaged refs index
    (report,) = mt.verify(s)
    assert not report.ok and len(report.problems) == 3, report
    (report,) = mt.verify(s, repair=True)
    assert report.ok and report.repaired
    assert {k for k, _ in entry_set(tmp_path / "s.db")} == {b"key-%d" % i for i in (0, 3, 4, 5)}
    assert mt.verify(s)[0].ok
    s.close()


def test_progress_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    quiet, tty = io.StringIO(), Tty()
    for stream in (quiet, tty):
        p = Progress("gc", "entries", stream)
        p(10, 2048)
        p.done()
    assert quiet.getvalue() == ""
    assert "gc: 10 entries, 2.0 KiB" in tty.getvalue() and tty.getvalue().endswith("\r")
