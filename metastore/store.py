"""Content-addressed, layered SQLite store (knows nothing of mypy).

A store is one writable *top* layer over zero or more read-only *base* layers; each layer is
one SQLite file opened with apsw.  Rows are only ever inserted (``INSERT OR IGNORE``), except
the mutable ``slots`` and the ``counters`` bookkeeping.  Blobs are addressed by their blake3
digest and deduplicated.  Lookups go top to bottom, writes go to the top; a base is never
written, not even by opening it.

Every failure of the file (missing directory, permissions, full disk, corruption, foreign or
newer file, a lock that never goes away) is raised as :class:`StoreError`, whose message is
one line: ``"<path>: <what is wrong>; <how to fix>"``.  Programming errors (a missing ref, a
malformed digest) raise :class:`ValueError`.

A :class:`Store` may be shared by threads (calls are serialised by a lock) but not across
``fork()``: open one per process.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import apsw
import blake3

T = TypeVar("T")
V = TypeVar("V")

#: ``PRAGMA application_id`` of a store file: ASCII "myms".
APPLICATION_ID = 0x6D796D73
#: ``PRAGMA user_version`` of the schema written by this code.  Version 1 files are read as
#: bases as they are; a writable version 1 top is migrated to version 2 when it is opened.
SCHEMA_VERSION = 2
DIGEST_SIZE = 32
#: Page size of new store files (existing files keep theirs). Most blobs are mypy data
#: and meta files of 1-100 KiB: with 16 KiB pages one spans a quarter of the overflow
#: pages it needs with SQLite's default 4 KiB (a quarter of the page reads, measured
#: 5.2 -> 4.0 ms for the 9 MiB of data a warm run of pip digest-checks), and the lookup
#: B-tree is a level or two shallower in a store of a million entries.
PAGE_SIZE = 16384

#: Last-use times are written at most once per this many seconds per entry (coarse LRU).
TOUCH_GRAIN_S = 3600
#: Blobs of evicted entries are deleted only after this many seconds, so that a run that
#: chose an entry before it was evicted still finds its blobs.
ORPHAN_GRACE_S = 3600
#: Automatic trimming: at most this long per put (the rest continues at the next put),
#: down to this fraction of max_size.
TRIM_BUDGET_S = 0.2
TRIM_LOW_WATER = 0.9
TRIM_BATCH = 256

# Retry policy for SQLITE_BUSY/SQLITE_LOCKED that survive the busy timeout, or that SQLite
# reports without waiting (WAL recovery, journal-mode change, deadlock avoidance).
BUSY_ATTEMPTS = 8
BUSY_FIRST_DELAY_S = 0.01
BUSY_MAX_DELAY_S = 0.5

# Bound on host parameters per statement (SQLite's default limit is 32766; stay far below).
_CHUNK = 500

_SCHEMA = """
-- A rowid table: blob data can be large and lives in overflow pages; the digest's unique
-- index stays small.  size comes before data so that stats never read overflow pages.
CREATE TABLE blobs (
    digest BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
-- refs: concatenated 32-byte digests of the blobs the entry needs.  The UNIQUE (key, value)
-- index also serves lookup by key, and covers it (seq is the rowid).
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    refs BLOB NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (key, value)
);
CREATE TABLE slots (
    key BLOB PRIMARY KEY,
    mtime REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# Lookup by key. The UNIQUE (key, value) index can serve it, but each of its cells carries a
# whole manifest (~1 KiB): at 200,000 entries it is 9 levels deep and a lookup costs 10 us per
# key, 3 us through this narrow index. Not part of the schema version: stores without it
# (written by older versions, or bases) still work, without the speed; every writer
# maintains it, and a top gets it when first opened by a version that knows it.
_KEY_INDEX = "CREATE INDEX IF NOT EXISTS entries_key ON entries (key)"

# Version 2: eviction bookkeeping.  ``used`` is the coarse last-use time (unix seconds) of an
# entry; ``refs`` indexes entries by the blobs they need (a blob may be shared by entries);
# ``orphans`` holds blobs no entry needs any more, deleted ORPHAN_GRACE_S after ``since``.
# New stores are created as version 1 plus this migration, so both have the same layout.
_MIGRATE_V2 = """
ALTER TABLE entries ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
UPDATE entries SET used = created;
CREATE INDEX entries_used ON entries (used);
CREATE TABLE refs (
    digest BLOB NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (digest, seq)
) WITHOUT ROWID;
CREATE TABLE orphans (
    digest BLOB PRIMARY KEY,
    since INTEGER NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
"""


class StoreError(Exception):
    """A problem with a store file; ``str()`` is one line: "<path>: <problem>; <fix>"."""


def digest(data: bytes) -> bytes:
    """Return the blake3 digest (32 bytes) of *data*."""
    return blake3.blake3(data).digest()


class Entry(NamedTuple):
    """One entry found by :meth:`Store.lookup`; layer 0 is the top, base i is layer i + 1."""

    value: bytes
    layer: int
    seq: int


class LayerStats(NamedTuple):
    """Statistics of one layer (see :meth:`Store.stats`)."""

    path: str
    role: str  # "top" or "base"
    entries: int
    blobs: int
    blob_bytes: int
    file_bytes: int
    schema_version: int
    labels: dict[str, int]
    counters: dict[str, int]
    live_bytes: int = 0  # pages in use minus blobs awaiting deletion (what max_size caps)
    orphan_blobs: int = 0  # blobs of evicted entries awaiting deletion (see ORPHAN_GRACE_S)
    immutable: bool = False


class Base(NamedTuple):
    """A read-only layer: its path, and whether it is known never to change while in use
    (then it is opened with SQLite's ``immutable=1``: no locks, no ``-wal``/``-shm``)."""

    path: str
    immutable: bool = False


class SizeInfo(NamedTuple):
    """Sizes of a writable layer, in bytes (cheap: page counts, not a scan)."""

    used: int  # pages in use (page_count - freelist_count) * page_size
    pending: int  # bytes of orphan blobs awaiting deletion
    oldest_orphan: int | None  # unix time the oldest orphan was orphaned

    @property
    def live(self) -> int:
        return max(0, self.used - self.pending)


class EvictResult(NamedTuple):
    entries: int
    orphaned_blobs: int
    orphaned_bytes: int


def _error(path: str, problem: str, fix: str) -> StoreError:
    return StoreError(f"{path}: {problem}; {fix}".replace("\n", " "))


def _is_wal_file(path: str) -> bool:
    """True if the SQLite header of *path* says WAL mode (read/write versions 2)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2 and header[19] == 2


def _disk_nearly_full(path: str) -> bool:
    """True if the file system holding *path* has less than 1 MiB free (SQLite reports
    some writes on a full disk, e.g. of the ``-shm`` file, as I/O errors, not as full)."""
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


def _translate(path: str, exc: apsw.Error, *, writable: bool) -> StoreError:
    """Map an apsw exception to a one-line StoreError naming *path*, problem and fix."""
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return _error(path, f"still locked by another process after {BUSY_ATTEMPTS} attempts",
                      "retry later, or look for a hung process holding the store")
    if isinstance(exc, apsw.FullError):
        return _error(path, "disk full (or the file reached its size limit)",
                      "free some disk space or move the store elsewhere")
    if isinstance(exc, apsw.NotADBError):
        return _error(path, "not a mypy-metastore store (not an SQLite database)",
                      "remove the file or choose another path")
    if isinstance(exc, apsw.CorruptError):
        return _error(path, "the database file is corrupt",
                      "delete it (it is only a cache) or restore a good copy")
    if not writable and isinstance(exc, (apsw.CantOpenError, apsw.ReadOnlyError)):
        if _is_wal_file(path):
            return _error(path, "base is in WAL mode and its directory is not writable",
                          "export it with journal mode DELETE, or make the directory writable")
        return _error(path, f"cannot open for reading ({exc})",
                      "check that the file exists and is readable")
    if isinstance(exc, (apsw.CantOpenError, apsw.ReadOnlyError, apsw.PermissionsError,
                        apsw.AuthError)):
        return _error(path, f"cannot write (permission denied or read-only file system: {exc})",
                      "fix the permissions, choose another store path, or use it as a base")
    if isinstance(exc, apsw.IOError):
        if _disk_nearly_full(path):
            return _error(path, "disk full (an I/O error with no free space left)",
                          "free some disk space or move the store elsewhere")
        code = getattr(exc, "extendedresult", None)
        name = apsw.mapping_extended_result_codes.get(code, code) if code else "SQLITE_IOERR"
        return _error(path, f"I/O error ({name})", "check the disk and the file system")
    return _error(path, f"SQLite error ({type(exc).__name__}: {exc})",
                  "check the file, or delete it (it is only a cache)")


def guarded(path: str, fn: Callable[[], T], *, writable: bool = True) -> T:
    """Call *fn*, retrying on busy/locked, and map apsw errors to StoreError.

    The one place where busy is retried: at most BUSY_ATTEMPTS calls, with jittered
    exponential backoff between them, then StoreError.  *fn* must be safe to re-run (a whole
    transaction, not half of one).  Exceptions other than apsw errors pass through unchanged.
    """
    delay = BUSY_FIRST_DELAY_S
    for attempt in range(BUSY_ATTEMPTS):
        try:
            return fn()
        except (apsw.BusyError, apsw.LockedError) as exc:
            if attempt == BUSY_ATTEMPTS - 1:
                raise _translate(path, exc, writable=writable) from exc
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BUSY_MAX_DELAY_S)
        except apsw.Error as exc:
            raise _translate(path, exc, writable=writable) from exc
    raise AssertionError("unreachable")


@contextlib.contextmanager
def transaction(conn: apsw.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back if the body or the commit raises.

    IMMEDIATE takes the write lock up front, so a writer waits (busy timeout) at BEGIN instead
    of failing later with SQLITE_BUSY_SNAPSHOT when upgrading a read transaction.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _refs_of(refs: Any) -> list[bytes]:
    """The digests concatenated in an entry's ``refs`` column."""
    data = bytes(refs)
    return [data[i:i + DIGEST_SIZE] for i in range(0, len(data), DIGEST_SIZE)]


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


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
        #: was bookkeeping only (counters, last-use times): see :meth:`close`.
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
        A connection whose only writes were bookkeeping (a warm run adds its counters)
        skips that: its commits stay in the WAL (as durable as in the file, read by every
        connection), the next connection that writes results or SQLite's auto-checkpoint
        (at 1000 WAL pages) moves them into the file.  Copying the file alone without its
        ``-wal`` can then miss those counters, never an entry."""
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
        intact (one query per 500 digests; run it inside :meth:`run`)."""
        for chunk in _chunks(digests):
            sql = f"SELECT digest, data FROM blobs WHERE digest IN ({_marks(len(chunk))})"
            for raw, raw_data in self.conn.execute(sql, chunk):
                blob_digest, data = bytes(raw), bytes(raw_data)
                if not self.verify or self._intact(blob_digest, data):
                    yield blob_digest, data

    def _intact(self, blob_digest: bytes, data: bytes) -> bool:
        """True if *data* matches *blob_digest*; else record and report the damage."""
        if digest(data) == blob_digest:
            return True
        if not self.damaged and self._on_damage is not None:
            if self.writable:
                what = ("store has blobs whose content does not match their digest (damaged); "
                        "they are not used: run `metastore --store "
                        f"{self.path} verify --repair`")
            else:
                what = ("base has blobs whose content does not match their digest (damaged "
                        "or forged); they are not used: replace the base with a good copy "
                        "from a trusted writer, or remove it from bases")
            self._on_damage(f"{self.path}: {what}")
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
                orphan_blobs=orphans, immutable=self.immutable)
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
              slots: Sequence[tuple[bytes, float, bytes]], counters: Mapping[str, int],
              check_refs: Sequence[bytes], touch: Sequence[int] = (),
              copies: Sequence[tuple[str, bytes, bytes, bytes]] = (),
              copy_blobs: Mapping[bytes, bytes] = {}) -> int:
        """Insert everything in ONE transaction; return the bytes of newly stored blobs.

        *touch*: seqs of entries of this layer that were used (their last-use time is
        updated if older than TOUCH_GRAIN_S).  *copies*: entries copied from a base with
        their *copy_blobs* (counted in the ``copied`` counter, not in the bytes returned).
        Raises ValueError (nothing written) if one of *check_refs* is neither in *blobs* nor
        already in this layer.
        """
        bookkeeping = not (blobs or entries or slots or copies)
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
                now = int(time.time())
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
                conn.executemany("INSERT OR REPLACE INTO slots (key, mtime, data) "
                                 "VALUES (?, ?, ?)", slots)
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
                now = int(time.time())
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
                                    (time.time() - grace_s,)).fetchall()
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
                self._count(self.conn, {"zeroed_at": int(time.time())})
        self.run(txn)

    @staticmethod
    def _count(conn: apsw.Connection, counters: Mapping[str, int]) -> None:
        conn.executemany("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) "
                         "DO UPDATE SET value = value + excluded.value", list(counters.items()))


class Store:
    """A writable top layer (optional) over read-only bases.

    Layer numbers in :class:`Entry`: 0 is the top, base ``i`` (0-based in *bases*) is
    ``i + 1`` (also when there is no top).  The top is created with its parent directories
    when the Store is opened; bases must exist and are opened ``mode=ro``.  Raises StoreError
    if a file cannot be opened or is not a store of a schema this version reads.
    """

    def __init__(self, top: str | None, bases: Sequence[str | Base] = (), *,
                 busy_timeout_ms: int = 60_000, copy_hits: bool = False,
                 max_size: int = 0, verify_top: bool = True, verify_bases: bool = True,
                 on_damage: Callable[[str], None] | None = None) -> None:
        self._lock = threading.RLock()
        self._layers: list[tuple[int, Layer]] = []
        self.copy_hits = copy_hits
        self.max_size = max_size
        try:
            if top is not None:
                self._layers.append(
                    (0, Layer(top, writable=True, busy_timeout_ms=busy_timeout_ms,
                              verify=verify_top, on_damage=on_damage)))
            for i, base in enumerate(bases):
                spec = base if isinstance(base, Base) else Base(base)
                self._layers.append(
                    (i + 1, Layer(spec.path, writable=False, busy_timeout_ms=busy_timeout_ms,
                                  immutable=spec.immutable, verify=verify_bases,
                                  on_damage=on_damage)))
        except BaseException:
            self.close()
            raise
        self._top = self._layers[0][1] if top is not None else None
        self._bases = [layer for _, layer in self._layers if not layer.writable]

    @property
    def path(self) -> str | None:
        """Absolute path of the top layer, or None."""
        return self._top.path if self._top is not None else None

    @property
    def top(self) -> Layer | None:
        """The writable top layer, or None."""
        return self._top

    @property
    def layers(self) -> list[Layer]:
        """Every layer, top first."""
        return [layer for _, layer in self._layers]

    @property
    def base_paths(self) -> tuple[str, ...]:
        """Absolute paths of the bases, in lookup order."""
        return tuple(layer.path for layer in self._bases)

    def lookup(self, keys: Sequence[bytes]) -> dict[bytes, list[Entry]]:
        """Return the entries of each key: every key is in the result (maybe with []).

        Order: layer ascending, then seq ascending.  A (key, value) present in several
        layers is returned once, from the top-most layer.  One query per layer per 500 keys.
        """
        unique = list(dict.fromkeys(keys))
        result: dict[bytes, list[Entry]] = {key: [] for key in unique}
        if not unique:
            return result
        seen: set[tuple[bytes, bytes]] = set()
        with self._lock:
            for number, layer in self._layers:
                for key, value, seq in layer.find(unique):
                    if (key, value) not in seen:
                        seen.add((key, value))
                        result[key].append(Entry(value=value, layer=number, seq=seq))
        return result

    def get_blob(self, blob_digest: bytes) -> bytes | None:
        """Return the blob with this digest (top first, then bases in order), or None."""
        with self._lock:
            for _, layer in self._layers:
                data = layer.get_blob(blob_digest)
                if data is not None:
                    return data
        return None

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        """Return {digest: data} for those of *digests* found in any layer (top first, then
        bases in order); one query per layer per 500 digests."""
        return self._first_found(digests, Layer.get_blobs)

    def intact_blobs(self, digests: Sequence[bytes]) -> set[bytes]:
        """Return those of *digests* present in some layer, and intact in a layer that
        verifies blobs (there the data is read and checked, then dropped; a damaged blob is
        looked for in the layers below, as :meth:`get_blobs` does)."""
        wanted = list(dict.fromkeys(digests))
        found: set[bytes] = set()
        with self._lock:
            for _, layer in self._layers:
                if not wanted:
                    break
                found |= layer.intact(wanted)
                wanted = [d for d in wanted if d not in found]
        return found

    def have_blobs(self, digests: Sequence[bytes]) -> set[bytes]:
        """Return those of *digests* present in some layer (no blob data is read)."""
        wanted = list(dict.fromkeys(digests))
        found: set[bytes] = set()
        with self._lock:
            for _, layer in self._layers:
                if not wanted:
                    break
                found |= layer.have_blobs(wanted)
                wanted = [d for d in wanted if d not in found]
        return found

    def get_slot(self, key: bytes) -> tuple[float, bytes] | None:
        """Return (mtime, data) of a slot (top first, then bases in order), or None."""
        with self._lock:
            for _, layer in self._layers:
                slot = layer.get_slot(key)
                if slot is not None:
                    return slot
        return None

    def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, tuple[float, bytes]]:
        """Return {key: (mtime, data)} for those of *keys* found in any layer (top first,
        then bases in order); one query per layer per 500 keys."""
        return self._first_found(keys, Layer.get_slots)

    def _first_found(self, keys: Sequence[bytes],
                     fetch: Callable[[Layer, Sequence[bytes]], dict[bytes, V]]) -> dict[bytes, V]:
        """{key: value} from the first layer (top, then bases in order) that has each key."""
        wanted = list(dict.fromkeys(keys))
        found: dict[bytes, V] = {}
        with self._lock:
            for _, layer in self._layers:
                if not wanted:
                    break
                found.update(fetch(layer, wanted))
                wanted = [k for k in wanted if k not in found]
        return found

    def put(self, *, entries: Sequence[tuple[str, bytes, bytes, Sequence[bytes]]] = (),
            blobs: Iterable[bytes] = (), slots: Sequence[tuple[bytes, float, bytes]] = (),
            counters: Mapping[str, int] = {}, used: Iterable[tuple[int, int]] = ()) -> int:
        """Write to the top in ONE short transaction; return the bytes of new blobs.

        entries are (label, key, value, refs); refs are digests of blobs the entry needs.
        Blobs are inserted by digest (INSERT OR IGNORE), then entries (INSERT OR IGNORE,
        unique on (key, value)); slots replace; counters are added (value += delta).
        *used*: (layer, seq) of entries (as from :meth:`lookup`) used since the last put:
        the top's get a coarse last-use time (bases are never written); with ``copy_hits``,
        base entries are copied into the top with their blobs.  Afterwards, if the top
        exceeds ``max_size``, it is trimmed for at most TRIM_BUDGET_S (the rest is left to
        later puts; trimming problems are left to them too).
        Raises ValueError (nothing written) if a ref is neither in *blobs* nor in a layer;
        StoreError if there is no top or the top cannot be written.
        """
        if self._top is None:
            raise _error("(no store)", "no writable top layer to put into",
                         "configure a store path")
        by_digest = {digest(data): bytes(data) for data in blobs}
        rows: list[tuple[str, bytes, bytes, bytes]] = []
        needed: set[bytes] = set()
        for label, key, value, refs in entries:
            for ref in refs:
                if len(ref) != DIGEST_SIZE:
                    raise ValueError(f"put(): ref {ref!r} is not a {DIGEST_SIZE}-byte digest")
            needed.update(refs)
            rows.append((label, key, value, b"".join(refs)))
        needed.difference_update(by_digest)
        touch = sorted({seq for layer, seq in used if layer == 0})
        with self._lock:
            # Bases never change: check them (and read what is copied from them) outside the
            # write transaction to keep it short.
            for layer in self._bases:
                if needed:
                    needed -= layer.have_blobs(sorted(needed))
            copies, copy_blobs = self._copies(used) if self.copy_hits else ([], {})
            written = self._top.write(by_digest, rows, slots, counters, sorted(needed),
                                      touch=touch, copies=copies, copy_blobs=copy_blobs)
            if self.max_size > 0:
                with contextlib.suppress(StoreError):
                    self.trim(self.max_size, budget_s=TRIM_BUDGET_S)
            return written

    def _copies(self, used: Iterable[tuple[int, int]]
                ) -> tuple[list[tuple[str, bytes, bytes, bytes]], dict[bytes, bytes]]:
        """The base entries among *used* with every blob they need (others are skipped)."""
        by_layer: dict[int, list[int]] = {}
        for number, seq in used:
            if number > 0:
                by_layer.setdefault(number, []).append(seq)
        layers = dict(self._layers)
        copies: list[tuple[str, bytes, bytes, bytes]] = []
        blobs: dict[bytes, bytes] = {}
        for number, seqs in sorted(by_layer.items()):
            layer = layers.get(number)
            if layer is None:
                continue
            for label, key, value, refs, _ in layer.entries_by_seq(seqs):
                needs = _refs_of(refs)
                missing = [d for d in needs if d not in blobs]
                blobs.update(layer.get_blobs(missing))
                if all(d in blobs for d in needs):
                    copies.append((label, bytes(key), bytes(value), bytes(refs)))
        return copies, blobs

    def trim(self, max_size: int, *, budget_s: float | None = None,
             grace_s: float = ORPHAN_GRACE_S,
             progress: Callable[[int, int], None] | None = None) -> tuple[int, int, int]:
        """Evict least recently used entries of the top until its live size (see
        :class:`SizeInfo`) is at most TRIM_LOW_WATER * *max_size* (when over *max_size*),
        and delete orphan blobs older than *grace_s*; stop after *budget_s* seconds if given.

        Returns (entries evicted, blobs deleted, bytes of blobs deleted).  *progress* is
        called with (entries evicted, bytes orphaned) so far.
        """
        top = self._top
        if top is None:
            return 0, 0, 0
        start = time.monotonic()
        evicted = orphaned_bytes = blobs = blob_bytes = 0

        def out_of_time() -> bool:
            return budget_s is not None and time.monotonic() - start > budget_s

        with self._lock:
            size = top.size()
            if size.live > max_size or size.oldest_orphan is not None:
                top._bookkeeping_only = False  # eviction: checkpoint at close as usual
            if size.live > max_size:
                while size.live > max_size * TRIM_LOW_WATER and not out_of_time():
                    result = top.evict(TRIM_BATCH)
                    if not result.entries:
                        break
                    evicted += result.entries
                    orphaned_bytes += result.orphaned_bytes
                    if progress is not None:
                        progress(evicted, orphaned_bytes)
                    size = top.size()
            if size.oldest_orphan is not None and size.oldest_orphan <= time.time() - grace_s:
                while not out_of_time():
                    n, nbytes = top.sweep(TRIM_BATCH, grace_s=grace_s)
                    blobs += n
                    blob_bytes += nbytes
                    if n < TRIM_BATCH:
                        break
                top.vacuum_free(None if budget_s is None else 2048)
        return evicted, blobs, blob_bytes

    def stats(self) -> list[LayerStats]:
        """Per-layer statistics, top first."""
        with self._lock:
            return [layer.stats("top" if layer.writable else "base")
                    for _, layer in self._layers]

    def close(self) -> None:
        """Close every layer; idempotent.  The Store cannot be used afterwards."""
        with self._lock:
            for _, layer in self._layers:
                layer.close()
