"""Tests of metastore.store: real apsw, real files, real threads and processes."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for spawned processes too

from metastore.store import sqlite as store_mod  # noqa: E402
from metastore.store.api import Entry, StoreError, digest  # noqa: E402
from metastore.store.local import Store


def blob(i: int) -> bytes:
    return f"blob-{i}-".encode() * (i % 7 + 1)


def entry(i: int, label: str = "meta") -> tuple[str, bytes, bytes, list[bytes]]:
    """Entry i needs blobs i and i + 1."""
    return (label, b"key-%d" % i, b"value-%d" % i, [digest(blob(i)), digest(blob(i + 1))])


def put_range(store: Store, lo: int, hi: int, **kw: object) -> int:
    return store.put(entries=[entry(i) for i in range(lo, hi)],
                     blobs=[blob(i) for i in range(lo, hi + 1)], **kw)  # type: ignore[arg-type]


def make_store(path: Path, fill: Callable[[Store], object]) -> Path:
    s = Store(str(path))
    fill(s)
    s.close()
    return path


def assert_one_line(exc: StoreError, path: Path, *words: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert "; " in msg
    for word in words:
        assert word in msg, msg


# -- layers ------------------------------------------------------------------------------


def test_layer_order_and_dedup_across_layers(tmp_path: Path) -> None:
    b2 = make_store(tmp_path / "b2.db", lambda s: s.put(
        entries=[("m", b"k", b"v-shared", []), ("m", b"k", b"v-b2", []), ("m", b"x", b"x2", [])],
        blobs=[b"only-in-b2"]))
    b1 = make_store(tmp_path / "b1.db", lambda s: s.put(
        entries=[("m", b"k", b"v-b1", []), ("m", b"k", b"v-shared", [])]))
    s = Store(str(tmp_path / "top" / "nested" / "top.db"), [str(b1), str(b2)])
    assert s.path == str(tmp_path / "top" / "nested" / "top.db")
    assert s.base_paths == (str(b1), str(b2))
    s.put(entries=[("m", b"k", b"v-top2", []), ("m", b"k", b"v-shared", []),
                   ("m", b"k", b"v-top1", [])])
    res = s.lookup([b"k", b"missing", b"k", b"x"])
    assert set(res) == {b"k", b"missing", b"x"}
    assert res[b"missing"] == []
    assert [(e.value, e.layer) for e in res[b"k"]] == [
        (b"v-top2", 0), (b"v-shared", 0), (b"v-top1", 0), (b"v-b1", 1), (b"v-b2", 2)]
    seqs = [e.seq for e in res[b"k"] if e.layer == 0]
    assert seqs == sorted(seqs)
    assert res[b"x"] == [Entry(value=b"x2", layer=2, seq=res[b"x"][0].seq)]
    # blobs: top first, then bases; a ref satisfied by a base only is accepted
    assert s.get_blob(digest(b"only-in-b2")) == b"only-in-b2"
    assert s.get_blob(digest(b"nowhere")) is None
    s.put(blobs=[b"in-top"])
    wanted = [digest(b"in-top"), digest(b"only-in-b2"), digest(b"nowhere"), digest(b"in-top")]
    assert s.get_blobs(wanted) == {digest(b"in-top"): b"in-top",
                                   digest(b"only-in-b2"): b"only-in-b2"}
    assert s.get_blobs([]) == {}
    s.put(slots=[(b"slot-a", 1.5, b"top-a")])
    assert s.get_slots([b"slot-a", b"slot-none"]) == {b"slot-a": (1.5, b"top-a")}
    assert s.put(entries=[("m", b"y", b"y", [digest(b"only-in-b2")])]) == 0
    assert [st.role for st in s.stats()] == ["top", "base", "base"]
    s.close()
    s.close()  # idempotent


def test_no_top_reads_bases(tmp_path: Path) -> None:
    b = make_store(tmp_path / "b.db", lambda s: s.put(entries=[("m", b"k", b"v", [])]))
    s = Store(None, [str(b)])
    assert s.path is None
    assert [e.layer for e in s.lookup([b"k"])[b"k"]] == [1]
    with pytest.raises(StoreError, match="no writable top"):
        s.put(blobs=[b"x"])
    s.close()


def test_put_dedups_blobs_and_entries(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    first = put_range(s, 0, 10)
    assert first == sum(len(blob(i)) for i in range(11))
    assert put_range(s, 5, 15) == sum(len(blob(i)) for i in range(11, 16))
    assert s.put(blobs=[b"a", b"a"]) == 1
    (st,) = s.stats()
    assert (st.entries, st.blobs, st.labels) == (15, 17, {"meta": 15})
    assert st.blob_bytes == sum(len(blob(i)) for i in range(16)) + 1
    assert st.schema_version == store_mod.SCHEMA_VERSION and st.file_bytes > 0
    assert all(len(v) == 1 for v in s.lookup([b"key-%d" % i for i in range(15)]).values())
    s.close()


def test_missing_ref_is_value_error_and_writes_nothing(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    with pytest.raises(ValueError, match="missing"):
        s.put(entries=[entry(1)], blobs=[blob(1)], slots=[(b"s", 1.0, b"d")],
              counters={"c": 1})
    with pytest.raises(ValueError):
        s.put(entries=[("m", b"k", b"v", [b"short"])])
    (st,) = s.stats()
    assert (st.entries, st.blobs, st.counters) == (0, 0, {})
    assert s.get_slot(b"s") is None
    assert s.get_blob(digest(blob(1))) is None
    s.close()


def test_slots_and_counters(tmp_path: Path) -> None:
    b = make_store(tmp_path / "b.db", lambda s: s.put(slots=[(b"s", 1.0, b"base"),
                                                            (b"t", 2.0, b"base-t")]))
    s = Store(str(tmp_path / "top.db"), [str(b)])
    s.put(slots=[(b"s", 3.5, b"one")], counters={"a": 2, "b": 1})
    s.put(slots=[(b"s", 4.5, b"two")], counters={"a": 3})
    assert s.get_slot(b"s") == (4.5, b"two")
    assert s.get_slot(b"t") == (2.0, b"base-t")
    assert s.get_slot(b"u") is None
    assert s.stats()[0].counters == {"a": 5, "b": 1}
    s.close()


def test_bookkeeping_only_close_skips_the_checkpoint(tmp_path: Path) -> None:
    """A connection that only added counters (a warm run) leaves its commit in the WAL
    instead of checkpointing at close (fsyncs of the WAL, the file and the directory); the
    next connection reads it, and one that writes results checkpoints everything."""
    path = tmp_path / "s.db"
    wal = Path(f"{path}-wal")
    s = Store(str(path))
    put_range(s, 0, 3)
    s.close()
    assert not wal.exists(), "a close after writing entries checkpoints and removes the WAL"
    before = path.read_bytes()
    s = Store(str(path))
    s.put(counters={"offered": 3}, used=[(0, 1)])
    s.close()
    assert wal.exists() and wal.stat().st_size > 0, "the counters were checkpointed at close"
    assert path.read_bytes() == before
    s = Store(str(path))
    assert s.stats()[0].counters == {"offered": 3}
    s.put(counters={"offered": 1})
    put_range(s, 3, 4)
    s.close()
    assert not wal.exists()
    s = Store(str(path))
    assert s.stats()[0].counters == {"offered": 4}
    s.close()


def test_lookup_large_batch(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    s.put(entries=[("m", b"k%d" % i, b"v", []) for i in range(0, 2400, 2)])
    res = s.lookup([b"k%d" % i for i in range(2400)])
    assert len(res) == 2400
    assert sum(len(v) for v in res.values()) == 1200
    s.close()


# -- refusing files ----------------------------------------------------------------------


def _foreign(p: Path) -> None:
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()


def _newer(p: Path) -> None:
    make_store(p, lambda s: s.put(blobs=[b"x"]))
    c = apsw.Connection(str(p))
    c.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION + 1}")
    c.close()


def _random(p: Path) -> None:
    p.write_bytes(os.urandom(8192))


def _truncated(p: Path) -> None:
    make_store(p, lambda s: put_range(s, 0, 300))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _directory(p: Path) -> None:
    p.mkdir()


@pytest.mark.parametrize("role", ["top", "base"])
@pytest.mark.parametrize("make,words", [
    (_foreign, ["not a mypy-metastore store"]),
    (_newer, ["written by a newer mypy-metastore", "upgrade"]),
    (_random, ["not a mypy-metastore store"]),
    (_truncated, ["corrupt", "delete it"]),
    (_directory, ["is a directory"]),
], ids=["foreign", "newer", "random", "truncated", "directory"])
def test_refuses_bad_files(tmp_path: Path, role: str, make: Callable[[Path], None],
                           words: list[str]) -> None:
    p = tmp_path / "bad.db"
    make(p)
    before = p.read_bytes() if p.is_file() else None
    with pytest.raises(StoreError) as info:
        s = Store(str(p)) if role == "top" else Store(None, [str(p)])
        s.lookup([b"key-%d" % i for i in range(300)])  # a truncated file fails on use
    assert_one_line(info.value, p, *words)
    if before is not None:
        assert p.read_bytes() == before  # refused files are not touched (no WAL switch)


def test_missing_base_and_uncreatable_parent(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        Store(None, [str(tmp_path / "nope.db")])
    assert_one_line(info.value, tmp_path / "nope.db", "does not exist")
    (tmp_path / "file").write_bytes(b"")
    bad = tmp_path / "file" / "sub" / "s.db"
    with pytest.raises(StoreError) as info:
        Store(str(bad))
    assert_one_line(info.value, bad, "cannot create directory")


def test_new_files_get_the_large_page_size_existing_files_keep_theirs(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    Store(str(new)).close()
    old = tmp_path / "old.db"
    c = sqlite3.connect(old)
    c.execute("PRAGMA page_size = 4096")
    c.execute("VACUUM")
    c.close()
    Store(str(old)).close()  # an empty file: the store creates its schema in it
    for path, size in ((new, store_mod.PAGE_SIZE), (old, 4096)):
        c = sqlite3.connect(path)
        assert c.execute("PRAGMA page_size").fetchone()[0] == size, path
        c.close()
    assert store_mod.PAGE_SIZE != 4096


def test_disk_full_is_store_error(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    # Simulate a full disk: cap this connection's file at its current size.
    top = s._layers[0][1]  # noqa: SLF001
    top.conn.execute("PRAGMA max_page_count = 10")
    with pytest.raises(StoreError) as info:
        s.put(blobs=[os.urandom(200_000)])
    assert_one_line(info.value, tmp_path / "s.db", "disk full")
    s.close()


def _unprivileged(fn: Callable[[], str]) -> str:
    """Run fn without write permission on root-owned files (fork + setuid when root)."""
    if os.geteuid() != 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgid(65534)
            os.setuid(65534)
            out = fn()
        except BaseException as exc:  # noqa: BLE001
            out = f"child failed: {exc!r}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def _store_error(fn: Callable[[], object]) -> Callable[[], str]:
    def run() -> str:
        try:
            fn()
        except StoreError as exc:
            return str(exc)
        return "no error"
    return run


def test_read_only_directory() -> None:
    # Not under tmp_path: its parents are private to the user, and the unprivileged child
    # must reach the files.
    d = Path(tempfile.mkdtemp(prefix="metastore-ro-"))
    base = make_store(d / "base.db", lambda s: s.put(blobs=[b"x"]))  # WAL mode
    d.chmod(0o555)
    try:
        msg = _unprivileged(_store_error(lambda: Store(None, [str(base)]).get_blob(b"x")))
        assert msg.startswith(f"{base}: ") and "WAL" in msg and "DELETE" in msg, msg
        msg = _unprivileged(_store_error(lambda: Store(str(d / "top.db"))))
        assert msg.startswith(f"{d / 'top.db'}: ") and "permission denied" in msg, msg
        msg = _unprivileged(_store_error(lambda: Store(str(base))))
        assert "permission denied" in msg, msg
    finally:
        d.chmod(0o755)
        shutil.rmtree(d)


# -- bases stay untouched ----------------------------------------------------------------


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_base_stays_byte_identical(tmp_path: Path, journal: str) -> None:
    base = make_store(tmp_path / "base.db", lambda s: (
        put_range(s, 0, 50), s.put(slots=[(b"s", 1.0, b"d")], counters={"c": 1})))
    if journal == "delete":
        c = apsw.Connection(str(base))
        c.execute("PRAGMA journal_mode = DELETE").fetchall()
        c.close()
    before = base.read_bytes()
    mtime = base.stat().st_mtime_ns
    s = Store(str(tmp_path / "top.db"), [str(base)])
    for round_ in range(3):
        assert len(s.lookup([b"key-%d" % i for i in range(60)])) == 60
        assert s.get_blob(digest(blob(3))) == blob(3)
        assert s.get_slot(b"s") == (1.0, b"d")
        s.stats()
        put_range(s, 40 + round_ * 20, 60 + round_ * 20, counters={"c": 1})
    s.close()
    assert base.read_bytes() == before
    assert base.stat().st_mtime_ns == mtime
    assert not (tmp_path / "base.db-journal").exists()


# -- concurrency -------------------------------------------------------------------------


def _writer(path: str, worker: int, barrier: object = None) -> None:
    if barrier is not None:
        barrier.wait()  # type: ignore[attr-defined]
    s = Store(path)  # all open the new file at once
    for lo in range(worker * 10, worker * 10 + 40, 5):
        put_range(s, lo, lo + 5, counters={"puts": 1, f"w{worker}": 1})
    s.close()


def _check_complete(path: str, workers: int) -> None:
    hi = (workers - 1) * 10 + 40
    s = Store(path)
    res = s.lookup([b"key-%d" % i for i in range(hi + 5)])
    assert all(len(res[b"key-%d" % i]) == 1 for i in range(hi))
    assert all(res[b"key-%d" % i] == [] for i in range(hi, hi + 5))
    (st,) = s.stats()
    assert (st.entries, st.blobs) == (hi, hi + 1)
    assert st.blob_bytes == sum(len(blob(i)) for i in range(hi + 1))
    assert st.counters == {"puts": workers * 8, **{f"w{w}": 8 for w in range(workers)}}
    s.close()


def test_threads_put_into_new_store(tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "s.db")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            _writer(path, worker, barrier)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_complete(path, 8)


def test_threads_share_one_store(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.db"))
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            for lo in range(worker * 10, worker * 10 + 40, 5):
                put_range(s, lo, lo + 5, counters={"puts": 1, f"w{worker}": 1})
                s.lookup([b"key-%d" % lo])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.close()
    assert errors == []
    _check_complete(str(tmp_path / "s.db"), 8)


def test_processes_put_into_new_store(tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "s.db")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(path, w, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    _check_complete(path, 4)


# -- busy --------------------------------------------------------------------------------


def _hold_write_lock(path: str, seconds: float) -> tuple[threading.Thread, threading.Event]:
    locked = threading.Event()

    def hold() -> None:
        c = apsw.Connection(path)
        c.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        c.execute("COMMIT")
        c.close()

    t = threading.Thread(target=hold)
    t.start()
    locked.wait()
    return t, locked


@pytest.mark.parametrize("busy_timeout_ms", [0, 5_000])
def test_put_waits_for_a_held_write_lock(tmp_path: Path, busy_timeout_ms: int) -> None:
    # busy_timeout_ms=0: SQLite fails at once and the retry loop waits; else SQLite waits.
    path = str(tmp_path / "s.db")
    s = Store(path, busy_timeout_ms=busy_timeout_ms)
    t, _ = _hold_write_lock(path, 0.2)
    start = time.monotonic()
    assert put_range(s, 0, 3) > 0
    assert time.monotonic() - start >= 0.15
    t.join()
    assert len(s.lookup([b"key-0"])[b"key-0"]) == 1
    s.close()


def test_put_gives_up_after_bounded_retries(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "BUSY_ATTEMPTS", 3)
    path = str(tmp_path / "s.db")
    s = Store(path, busy_timeout_ms=0)
    t, _ = _hold_write_lock(path, 1.0)
    with pytest.raises(StoreError) as info:
        put_range(s, 0, 3)
    assert_one_line(info.value, tmp_path / "s.db", "locked", "retry later")
    t.join()
    assert put_range(s, 0, 3) > 0  # usable afterwards: the failed transaction was cleaned up
    s.close()


def _tamper(path: Path, blob_digest: bytes, data: bytes) -> None:
    """Replace the content of a blob behind the store's back (same digest, other bytes)."""
    c = sqlite3.connect(path)
    c.execute("UPDATE blobs SET data = ? WHERE digest = ?", (data, blob_digest))
    c.commit()
    c.close()


@pytest.mark.parametrize("role", ["top", "base"])
def test_damaged_blobs_are_not_returned_and_reported_once(tmp_path: Path, role: str) -> None:
    good, other = b"good blob", b"another blob"
    path = tmp_path / "s.db"
    s = Store(str(path))
    s.put(entries=[("l", b"k", b"v", [digest(good), digest(other)])], blobs=[good, other])
    s.close()
    _tamper(path, digest(good), b"forged blob")
    reports: list[str] = []
    top, bases = (str(path), []) if role == "top" else (None, [str(path)])
    s = Store(top, bases, on_damage=reports.append)
    assert s.get_blob(digest(good)) is None
    assert s.get_blobs([digest(good), digest(other)]) == {digest(other): other}
    assert s.intact_blobs([digest(good), digest(other)]) == {digest(other)}
    assert s.have_blobs([digest(good)]) == {digest(good)}  # present, not read
    assert len(reports) == 1 and reports[0].startswith(f"{path}: "), reports
    assert ("verify --repair" in reports[0]) == (role == "top"), reports
    s.close()
    # Without verification (verify_bases=False) a base's blob is returned as stored.
    if role == "base":
        s = Store(None, [str(path)], verify_bases=False)
        assert s.get_blob(digest(good)) == b"forged blob"
        s.close()


def test_damaged_top_blob_falls_back_to_an_intact_base_copy(tmp_path: Path) -> None:
    good = b"shared blob"
    top, base = tmp_path / "top.db", tmp_path / "base.db"
    for p in (top, base):
        s = Store(str(p))
        s.put(entries=[("l", b"k", b"v", [digest(good)])], blobs=[good])
        s.close()
    _tamper(top, digest(good), b"rotten")
    s = Store(str(top), [str(base)], on_damage=lambda _: None)
    assert s.get_blob(digest(good)) == good
    assert s.intact_blobs([digest(good)]) == {digest(good)}
    s.close()


def test_key_index_is_added_to_a_top_and_optional_in_a_base(tmp_path: Path) -> None:
    """Stores written before the narrow key index still work as bases (lookups use the
    wide unique index) and get the index when opened as a top; lookups use it then."""
    path = tmp_path / "s.db"
    s = Store(str(path))
    put_range(s, 0, 5)
    s.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX entries_key")
    base = Store(None, [str(path)])
    assert not base.layers[0].key_index
    assert [e.value for e in base.lookup([entry(3)[1]])[entry(3)[1]]] == [entry(3)[2]]
    base.close()
    top = Store(str(path))
    assert top.layers[0].key_index
    plan = top.layers[0].conn.execute(
        "EXPLAIN QUERY PLAN SELECT key, value, seq FROM entries INDEXED BY entries_key "
        "WHERE key IN (?)", (entry(3)[1],)).fetchall()
    assert "entries_key" in str(plan)
    assert [e.value for e in top.lookup([entry(3)[1]])[entry(3)[1]]] == [entry(3)[2]]
    top.close()
