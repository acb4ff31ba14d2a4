"""One store file: a layer (the writable top, or a read-only base)."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar, Any

import apsw

from metastore.store.api import (
    DIGEST_SIZE, ORPHAN_GRACE_S, TOUCH_GRAIN_S, EvictResult, LayerStats, SizeInfo, digest,
    now as clock)
from metastore.store import slots as slot_rows
from metastore.store.sqlite import (
    _KEY_INDEX, _MIGRATE_V2, _MIGRATE_V3, _SCHEMA, APPLICATION_ID, PAGE_SIZE, SCHEMA_VERSION,
    _chunks, _error, _marks, _refs_of, guarded, transaction)

T = TypeVar("T")

class Layer:
    """One SQLite file of a store: the writable top or a read-only base."""

    def __init__(self, path: str, *, writable: bool, busy_timeout_ms: int,
                 immutable: bool = False, verify: bool = False,
                 on_damage: Callable[[str], None] | None = None) -> None:
        self.path = os.path.abspath(path)
        self.writable = writable
        self.immutable = immutable and not writable
        #: Check every blob read against its digest; a blob that does not match is treated
        #: as absent and recorded in ``damaged`` (``on_damage`` gets one line, once).
        self.verify = verify
        self.damaged: set[bytes] = set()
        self._on_damage = on_damage
        self.version = 0
        self._busy_timeout_ms = busy_timeout_ms
        self._pid = os.getpid()
        self._conn: apsw.Connection | None = None
        #: None until :meth:`write` runs; then True while every write of this connection
        #: was bookkeeping only or recoverable: see :meth:`close`.
        self._bookkeeping_only: bool | None = None
        #: The directory this open created for the top (it did not exist), else None.
        self.created_dir: str | None = None
        #: True if the file has the narrow index on entries.key (see _KEY_INDEX).
        self.key_index = False
        self._check_path()
        self._conn = self.run(self._open)

    # -- opening -------------------------------------------------------------------------

    def _check_path(self) -> None:
        if os.path.isdir(self.path):
            raise _error(self.path, "is a directory, not a store file",
                         f"give a file path, e.g. {os.path.join(self.path, 'store.db')}")
        parent = os.path.dirname(self.path)
        if not self.writable:
            try:
                os.stat(self.path)
            except FileNotFoundError:
                raise _error(self.path, "base store does not exist",
                             "check the base path") from None
            except OSError:
                pass  # e.g. permission denied: let SQLite report it
            return
        try:
            if not os.path.isdir(parent):
                # Like ccache with its cache_dir: created with its parents (mkdir -p); the
                # drop-in says so with --metastore-stats or -v (README, Configuration).
                os.makedirs(parent, exist_ok=True)
                self.created_dir = parent
        except OSError as exc:
            raise _error(self.path, f"cannot create directory {parent} ({exc.strerror})",
                         "create it or choose another store path") from exc
        if not os.access(parent, os.W_OK) or (os.path.exists(self.path)
                                              and not os.access(self.path, os.W_OK)):
            raise _error(self.path, "cannot write (permission denied or read-only file system)",
                         "fix the permissions, choose another store path, or use it as a base")

    def _open(self) -> apsw.Connection:
        if self.writable:
            conn = apsw.Connection(self.path)
        else:
            uri = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
            if self.immutable:
                # The file is declared never to change: SQLite takes no locks and never
                # looks for (or creates) -wal/-shm files.
                uri += "&immutable=1"
            conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            # Wait for other processes' locks inside SQLite rather than failing at once
            # (a connection setting, nothing is written).
            conn.set_busy_timeout(self._busy_timeout_ms)
            if not self.writable:
                # Belt and braces: make any accidental write on a base fail (connection-only).
                conn.execute("PRAGMA query_only = 1")
                self.version = self._check_schema(conn)
                if not self.version:
                    raise _error(self.path, "empty file, not a mypy-metastore store",
                                 "check the base path")
                self.key_index = self._has_key_index(conn)
                return conn
            if conn.readonly("main"):
                raise _error(self.path,
                             "cannot write (permission denied or read-only file system)",
                             "fix the permissions, choose another store path, or use it as "
                             "a base")
            # Takes effect only when the file is created (and only before anything is read).
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            version = self._check_schema(conn)  # refuse foreign files before writing anything
            if not version:
                # Pages freed by eviction go back to the file system (PRAGMA
                # incremental_vacuum); only possible before the first page is written.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            # WAL: readers never block the writer and never see a partial transaction;
            # persistent in the file, a no-op if already set.  Must run outside a transaction.
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            # NORMAL is durable enough in WAL: a crash can lose the last commits but never
            # corrupts the file, and commits do not wait for fsync.
            conn.execute("PRAGMA synchronous = NORMAL")
            # Cap the WAL file left behind after a checkpoint (64 MiB), so one large put does
            # not leave a large file forever.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            if version < SCHEMA_VERSION:
                # Race-safe creation and migration: re-check under the write lock; the loser
                # sees the new schema.
                with transaction(conn):
                    version = self._check_schema(conn)
                    if not version:
                        conn.execute(_SCHEMA)
                        # Mark the file as ours (checked on every open).
                        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    if version < 2:
                        self._migrate_v2(conn)
                    if version < 3:
                        conn.execute(_MIGRATE_V3)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.version = SCHEMA_VERSION
            if not self._has_key_index(conn):
                with transaction(conn):  # once per file; IF NOT EXISTS: racing openers
                    conn.execute(_KEY_INDEX)
            self.key_index = True
            return conn
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _has_key_index(conn: apsw.Connection) -> bool:
        return bool(conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                 "name = 'entries_key'").fetchall()[0][0])

    @staticmethod
    def _migrate_v2(conn: apsw.Connection) -> None:
        """Version 1 -> 2 (inside the caller's transaction): last-use times and the refs
        index, built from the existing entries."""
        conn.execute(_MIGRATE_V2)
        rows = [(ref, seq) for seq, refs in conn.execute("SELECT seq, refs FROM entries")
                for ref in _refs_of(refs)]
        conn.executemany("INSERT OR IGNORE INTO refs (digest, seq) VALUES (?, ?)", rows)

    def _check_schema(self, conn: apsw.Connection) -> int:
        """Return the schema version, 0 if the file is empty; raise StoreError if it is not
        ours (read-only)."""
        # One statement, so one snapshot: a concurrent creator's commit is seen all or nothing.
        app_id, version, tables = (int(v or 0) for v in conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master)").fetchall()[0])
        if app_id == 0 and version == 0 and tables == 0:
            return 0
        if app_id != APPLICATION_ID:
            raise _error(self.path, "not a mypy-metastore store (an SQLite database of another "
                         "application)",
                         "remove the file or choose another path")
        if version > SCHEMA_VERSION:
            raise _error(self.path, f"written by a newer mypy-metastore (schema {version}, this "
                         f"version reads {SCHEMA_VERSION})", "upgrade mypy-metastore")
        if version < 1:
            raise _error(self.path, f"not a mypy-metastore store (schema version {version})",
                         "remove the file or choose another path")
        return version

    # -- plumbing ------------------------------------------------------------------------

    @property
    def conn(self) -> apsw.Connection:
        if self._conn is None:
            raise ValueError(f"{self.path}: store layer is closed")
        if os.getpid() != self._pid:
            raise ValueError(f"{self.path}: store used across fork(); open one per process")
        return self._conn

    def run(self, fn: Callable[[], T]) -> T:
        """Run *fn* with busy retry and error mapping for this file (see :func:`guarded`)."""
        return guarded(self.path, fn, writable=self.writable)

    def close(self) -> None:
        """Close the connection.  The last connection to close normally checkpoints the WAL
        into the file and deletes it, which costs fsyncs of the WAL, the file and the
        directory (1.5-10 ms on this machine; a warm run of a small project takes 100 ms).
        A connection whose only writes were bookkeeping (a warm run adds its counters) or
        copies of what a remote tier holds (``recoverable`` writes) skips that: its
        commits stay in the WAL (as durable as in the file, read by every connection), the
        next connection that writes results or SQLite's auto-checkpoint (at 1000 WAL
        pages) moves them into the file.  Copying the file alone without its ``-wal`` can
        then miss those counters and copies, never an entry only this store holds."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(apsw.Error):
                if self._bookkeeping_only:
                    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            with contextlib.suppress(apsw.Error):
                conn.close()

    # -- reads ---------------------------------------------------------------------------

    def find(self, keys: Sequence[bytes]) -> list[tuple[bytes, bytes, int]]:
        """Return (key, value, seq) of all entries with one of *keys*, ordered by seq."""
        def query() -> list[tuple[bytes, bytes, int]]:
            rows: list[tuple[bytes, bytes, int]] = []
            for chunk in _chunks(keys):
                index = "INDEXED BY entries_key " if self.key_index else ""
                sql = (f"SELECT key, value, seq FROM entries {index}"
                       f"WHERE key IN ({_marks(len(chunk))})")
                rows.extend(self.conn.execute(sql, chunk))
            rows.sort(key=lambda row: row[2])
            return rows
        return self.run(query)

    def have_blobs(self, digests: Sequence[bytes]) -> set[bytes]:
        """Return the subset of *digests* present in this layer."""
        return self.run(lambda: self._have_blobs(digests))

    def _have_blobs(self, digests: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for chunk in _chunks(digests):
            sql = f"SELECT digest FROM blobs WHERE digest IN ({_marks(len(chunk))})"
            found.update(row[0] for row in self.conn.execute(sql, chunk))
        return found

    def get_blob(self, blob_digest: bytes) -> bytes | None:
        """The blob's data, or None (absent, or damaged when verifying)."""
        def query() -> bytes | None:
            rows = self.conn.execute("SELECT data FROM blobs WHERE digest = ?",
                                     (blob_digest,)).fetchall()
            return bytes(rows[0][0]) if rows else None  # type: ignore[arg-type]
        data = self.run(query)
        if data is not None and self.verify and not self._intact(blob_digest, data):
            return None
        return data

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        """Return {digest: data} of those of *digests* present in this layer (and intact,
        when verifying)."""
        return self.run(lambda: dict(self._blobs(digests)))

    def intact(self, digests: Sequence[bytes]) -> set[bytes]:
        """Those of *digests* present in this layer and, when verifying, intact (each blob
        is read, checked against its digest and dropped)."""
        if not self.verify:
            return self.have_blobs(digests)
        return self.run(lambda: {blob_digest for blob_digest, _ in self._blobs(digests)})

    def _blobs(self, digests: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """(digest, data) of those of *digests* present in this layer and, when verifying,
        intact; run it inside :meth:`run`.  Rows are found by digest, then read in rowid
        order (by digest, the table's pages are visited at random: twice the time at 10,000
        blobs); a rowid reused in between is told apart by its digest."""
        wanted = set(digests)
        rowids: list[int] = []
        for chunk in _chunks(digests):
            sql = f"SELECT rowid FROM blobs WHERE digest IN ({_marks(len(chunk))})"
            rowids.extend(int(row[0]) for row in self.conn.execute(sql, chunk))
        rowids.sort()
        for ids in _chunks(rowids):
            sql = f"SELECT digest, data FROM blobs WHERE rowid IN ({_marks(len(ids))})"
            for raw, raw_data in self.conn.execute(sql, ids):
                blob_digest, data = bytes(raw), bytes(raw_data)
                if blob_digest in wanted and (not self.verify
                                              or self._intact(blob_digest, data)):
                    yield blob_digest, data

    def _intact(self, blob_digest: bytes, data: bytes) -> bool:
        """True if *data* matches *blob_digest*; else record and report the damage."""
        if digest(data) == blob_digest:
            return True
        if not self.damaged and self._on_damage is not None:
            self._on_damage(_damage_line(self.path, self.writable))
        self.damaged.add(blob_digest)
        return False

    def get_slot(self, key: bytes) -> tuple[float, bytes] | None:
        def query() -> tuple[float, bytes] | None:
            rows = self.conn.execute("SELECT mtime, data FROM slots WHERE key = ?",
                                     (key,)).fetchall()
            if not rows:
                return None
            mtime, data = rows[0]
            return float(mtime), bytes(data)  # type: ignore[arg-type]
        return self.run(query)

    def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, tuple[float, bytes]]:
        """Return {key: (mtime, data)} of those of *keys* present in this layer."""
        def query() -> dict[bytes, tuple[float, bytes]]:
            found: dict[bytes, tuple[float, bytes]] = {}
            for chunk in _chunks(keys):
                sql = f"SELECT key, mtime, data FROM slots WHERE key IN ({_marks(len(chunk))})"
                found.update((bytes(k), (float(m), bytes(d)))
                             for k, m, d in self.conn.execute(sql, chunk))
            return found
        return self.run(query)

    def stats(self, role: str) -> LayerStats:
        def query() -> LayerStats:
            c = self.conn

            def one(sql: str) -> Any:
                return c.execute(sql).fetchall()[0][0]
            labels = {str(k): int(v) for k, v in c.execute(
                "SELECT label, count(*) FROM entries GROUP BY label ORDER BY label")}
            counters = {str(k): int(v) for k, v in c.execute(
                "SELECT name, value FROM counters ORDER BY name")}
            file_bytes = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                             if os.path.exists(p))
            orphans = int(one("SELECT count(*) FROM orphans")) if self.version >= 2 else 0
            return LayerStats(path=self.path, role=role, entries=int(one(
                "SELECT count(*) FROM entries")), blobs=int(one("SELECT count(*) FROM blobs")),
                blob_bytes=int(one("SELECT coalesce(sum(size), 0) FROM blobs")),
                file_bytes=file_bytes, schema_version=int(c.pragma("user_version")),
                labels=labels, counters=counters, live_bytes=self._size().live,
                orphan_blobs=orphans, immutable=self.immutable,
                slot_kinds=slot_rows.by_kind(c, self.version))
        return self.run(query)

    def size(self) -> SizeInfo:
        """Sizes from page counts (no scan); see :class:`SizeInfo`."""
        return self.run(self._size)

    def _size(self) -> SizeInfo:
        has_orphans = self.version >= 2
        row: Any = self.conn.execute(
            "SELECT (SELECT page_count FROM pragma_page_count),"
            " (SELECT freelist_count FROM pragma_freelist_count),"
            " (SELECT page_size FROM pragma_page_size)"
            + (", (SELECT coalesce(sum(size), 0) FROM orphans), (SELECT min(since) FROM orphans)"
               if has_orphans else ", 0, NULL")).fetchall()[0]
        pages, free, page_size, pending, oldest = row
        return SizeInfo(used=(int(pages) - int(free)) * int(page_size),
                        pending=int(pending),
                        oldest_orphan=None if oldest is None else int(oldest))

    def entries_by_seq(self, seqs: Sequence[int]) -> list[tuple[str, bytes, bytes, bytes, int]]:
        """(label, key, value, refs, created) of the entries with these seqs, in seq order."""
        def query() -> list[tuple[str, bytes, bytes, bytes, int]]:
            rows: list[tuple[str, bytes, bytes, bytes, int]] = []
            for chunk in _chunks(sorted(set(seqs))):
                rows.extend(self.conn.execute(
                    f"SELECT label, key, value, refs, created FROM entries WHERE seq IN "
                    f"({_marks(len(chunk))}) ORDER BY seq", chunk))
            return rows
        return self.run(query)

    # -- writes (top only) ---------------------------------------------------------------

    def write(self, blobs: Mapping[bytes, bytes],
              entries: Sequence[tuple[str, bytes, bytes, bytes]],
              slots: Sequence[slot_rows.SlotRow], counters: Mapping[str, int],
              check_refs: Sequence[bytes], touch: Sequence[int] = (),
              touch_slots: Sequence[bytes] = (),
              copies: Sequence[tuple[str, bytes, bytes, bytes]] = (),
              copy_blobs: Mapping[bytes, bytes] = {}, recoverable: bool = False) -> int:
        """Insert everything in ONE transaction; return the bytes of newly stored blobs.

        *touch*: seqs of entries of this layer that were used, *touch_slots*: keys of its
        slots that were (last-use times are updated if older than TOUCH_GRAIN_S).
        *copies*: entries copied from a base with their *copy_blobs* (counted in the
        ``copied`` counter, not in the bytes returned).
        *recoverable*: all of it is held by another tier too (see :meth:`close`).
        Raises ValueError (nothing written) if one of *check_refs* is neither in *blobs* nor
        already in this layer.
        """
        bookkeeping = recoverable or not (blobs or entries or slots or copies)
        self._bookkeeping_only = bookkeeping and self._bookkeeping_only is not False

        def txn() -> int:
            conn = self.conn
            new_bytes = 0
            with transaction(conn):
                missing = set(check_refs) - self._have_blobs(check_refs)
                if missing:
                    raise ValueError(f"put(): entry refs missing from the put and from every "
                                     f"layer: {sorted(d.hex() for d in missing)}")
                # Blobs first, then the entries that need them: readers never see an entry
                # whose blobs are missing (and the whole put commits atomically anyway).
                for blob_digest, data in blobs.items():
                    conn.execute("INSERT OR IGNORE INTO blobs (digest, size, data) "
                                 "VALUES (?, ?, ?)", (blob_digest, len(data), data))
                    if conn.changes():
                        new_bytes += len(data)
                now = int(clock())
                self._insert_entries(entries, now, now)
                all_counters = dict(counters)
                if copies:
                    for blob_digest, data in copy_blobs.items():
                        conn.execute("INSERT OR IGNORE INTO blobs (digest, size, data) "
                                     "VALUES (?, ?, ?)", (blob_digest, len(data), data))
                    copied = self._insert_entries(copies, now, now)
                    if copied:
                        all_counters["copied"] = all_counters.get("copied", 0) + copied
                if touch:
                    for chunk in _chunks(sorted(set(touch))):
                        conn.execute(f"UPDATE entries SET used = ? WHERE used < ? AND seq IN "
                                     f"({_marks(len(chunk))})",
                                     (now, now - TOUCH_GRAIN_S, *chunk))
                slot_rows.touch(conn, touch_slots, now)
                slot_rows.insert(conn, slots, now)
                self._count(conn, all_counters)
            return new_bytes
        return self.run(txn)

    def _insert_entries(self, entries: Sequence[tuple[str, bytes, bytes, bytes]]
                        | Sequence[tuple[str, bytes, bytes, bytes, int]],
                        created: int, used: int) -> int:
        """INSERT OR IGNORE entries (label, key, value, refs[, created]) with their refs rows
        (inside a transaction); return how many were new."""
        conn = self.conn
        new = 0
        for row in entries:
            label, key, value, refs = row[:4]
            rows = conn.execute("INSERT OR IGNORE INTO entries (label, key, value, refs, "
                                "created, used) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
                                (label, key, value, refs, row[4] if len(row) > 4 else created,
                                 used)).fetchall()
            if rows:
                new += 1
                seq = rows[0][0]
                conn.executemany("INSERT OR IGNORE INTO refs (digest, seq) VALUES (?, ?)",
                                 [(refs[i:i + DIGEST_SIZE], seq)
                                  for i in range(0, len(refs), DIGEST_SIZE)])
        return new

    # -- eviction (top only) -------------------------------------------------------------

    def evict(self, limit: int, *, used_before: int | None = None) -> EvictResult:
        """Delete up to *limit* least recently used entries (only those last used before
        *used_before*, if given) in one transaction.  Blobs no remaining entry needs become
        orphans: deleted by :meth:`sweep` once ORPHAN_GRACE_S has passed."""
        def txn() -> EvictResult:
            conn = self.conn
            with transaction(conn):
                where = "" if used_before is None else "WHERE used < ?"
                params: tuple[int, ...] = () if used_before is None else (used_before,)
                rows: list[Any] = conn.execute(
                    f"SELECT seq, refs FROM entries {where} ORDER BY used, seq "
                    f"LIMIT {int(limit)}", params).fetchall()
                if not rows:
                    return EvictResult(0, 0, 0)
                seqs = [int(seq) for seq, _ in rows]
                for chunk in _chunks(seqs):
                    conn.execute(f"DELETE FROM entries WHERE seq IN ({_marks(len(chunk))})",
                                 chunk)
                pairs = [(ref, seq) for seq, refs in rows for ref in _refs_of(refs)]
                conn.executemany("DELETE FROM refs WHERE digest = ? AND seq = ?", pairs)
                now = int(clock())
                orphaned = orphaned_bytes = 0
                for blob_digest in sorted({d for d, _ in pairs}):
                    conn.execute("INSERT OR IGNORE INTO orphans (digest, since, size) "
                                 "SELECT digest, ?, size FROM blobs WHERE digest = ? AND NOT "
                                 "EXISTS (SELECT 1 FROM refs WHERE digest = ?)",
                                 (now, blob_digest, blob_digest))
                    if conn.changes():
                        orphaned += 1
                        size: Any = conn.execute("SELECT size FROM orphans WHERE digest = ?",
                                                 (blob_digest,)).fetchall()[0][0]
                        orphaned_bytes += int(size)
                self._count(conn, {"evicted_entries": len(rows)})
                return EvictResult(len(rows), orphaned, orphaned_bytes)
        return self.run(txn)

    def sweep(self, limit: int, *, grace_s: float = ORPHAN_GRACE_S) -> tuple[int, int]:
        """Delete up to *limit* orphan blobs orphaned at least *grace_s* ago and still
        needed by no entry (one transaction); return (blobs, bytes) deleted."""
        def txn() -> tuple[int, int]:
            conn = self.conn
            with transaction(conn):
                rows: list[Any] = conn.execute("SELECT digest, size FROM orphans WHERE since <= ? "
                                    f"ORDER BY since LIMIT {int(limit)}",
                                    (clock() - grace_s,)).fetchall()
                deleted = deleted_bytes = 0
                for blob_digest, size in rows:
                    conn.execute("DELETE FROM orphans WHERE digest = ?", (blob_digest,))
                    conn.execute("DELETE FROM blobs WHERE digest = ? AND NOT EXISTS "
                                 "(SELECT 1 FROM refs WHERE digest = ?)",
                                 (blob_digest, blob_digest))
                    if conn.changes():
                        deleted += 1
                        deleted_bytes += int(size)
                if deleted:
                    self._count(conn, {"evicted_blobs": deleted,
                                       "evicted_bytes": deleted_bytes})
            return deleted, deleted_bytes
        return self.run(txn)

    def vacuum_free(self, pages: int | None = None) -> None:
        """Return free pages to the file system (``PRAGMA incremental_vacuum``); a no-op for
        stores created before version 2 (auto_vacuum off)."""
        arg = "" if pages is None else f"({int(pages)})"
        self.run(lambda: self.conn.execute(f"PRAGMA incremental_vacuum{arg}").fetchall())

    def zero_counters(self) -> None:
        def txn() -> None:
            with transaction(self.conn):
                self.conn.execute("DELETE FROM counters")
                self._count(self.conn, {"zeroed_at": int(clock())})
        self.run(txn)

    @staticmethod
    def _count(conn: apsw.Connection, counters: Mapping[str, int]) -> None:
        conn.executemany("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) "
                         "DO UPDATE SET value = value + excluded.value", list(counters.items()))


def _damage_line(path: str, writable: bool) -> str:
    """The one line reporting blobs of the layer at *path* that fail their digest."""
    if writable:
        what = ("store has blobs whose content does not match their digest (damaged); they "
                f"are not used: run `metastore --store {path} verify --repair`")
    else:
        what = ("base has blobs whose content does not match their digest (damaged or "
                "forged); they are not used: replace the base with a good copy from a "
                "trusted writer, or remove it from bases")
    return f"{path}: {what}"
