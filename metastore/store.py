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

#: ``PRAGMA application_id`` of a store file: ASCII "myms".
APPLICATION_ID = 0x6D796D73
#: ``PRAGMA user_version`` of the schema written by this code.
SCHEMA_VERSION = 1
DIGEST_SIZE = 32

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
        return _error(path, f"I/O error ({exc})", "check the disk and the file system")
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


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Layer:
    """One SQLite file of a store: the writable top or a read-only base."""

    def __init__(self, path: str, *, writable: bool, busy_timeout_ms: int) -> None:
        self.path = os.path.abspath(path)
        self.writable = writable
        self._busy_timeout_ms = busy_timeout_ms
        self._pid = os.getpid()
        self._conn: apsw.Connection | None = None
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
            os.makedirs(parent, exist_ok=True)
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
            conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            # Wait for other processes' locks inside SQLite rather than failing at once
            # (a connection setting, nothing is written).
            conn.set_busy_timeout(self._busy_timeout_ms)
            if not self.writable:
                # Belt and braces: make any accidental write on a base fail (connection-only).
                conn.execute("PRAGMA query_only = 1")
                if self._check_schema(conn):
                    raise _error(self.path, "empty file, not a mypy-metastore store",
                                 "check the base path")
                return conn
            if conn.readonly("main"):
                raise _error(self.path,
                             "cannot write (permission denied or read-only file system)",
                             "fix the permissions, choose another store path, or use it as "
                             "a base")
            empty = self._check_schema(conn)  # refuse foreign files before writing anything
            # WAL: readers never block the writer and never see a partial transaction;
            # persistent in the file, a no-op if already set.  Must run outside a transaction.
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            # NORMAL is durable enough in WAL: a crash can lose the last commits but never
            # corrupts the file, and commits do not wait for fsync.
            conn.execute("PRAGMA synchronous = NORMAL")
            # Cap the WAL file left behind after a checkpoint (64 MiB), so one large put does
            # not leave a large file forever.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            if empty:
                # Race-safe creation: re-check under the write lock; the loser sees the schema.
                with transaction(conn):
                    if self._check_schema(conn):
                        conn.execute(_SCHEMA)
                        # Mark the file as ours and its schema version (checked on every open).
                        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return conn
        except BaseException:
            conn.close()
            raise

    def _check_schema(self, conn: apsw.Connection) -> bool:
        """Return True if the file is empty; raise StoreError if it is not ours (read-only)."""
        # One statement, so one snapshot: a concurrent creator's commit is seen all or nothing.
        app_id, version, tables = (int(v or 0) for v in conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master)").fetchall()[0])
        if app_id == 0 and version == 0 and tables == 0:
            return True
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
        return False

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
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(apsw.Error):
                conn.close()

    # -- reads ---------------------------------------------------------------------------

    def find(self, keys: Sequence[bytes]) -> list[tuple[bytes, bytes, int]]:
        """Return (key, value, seq) of all entries with one of *keys*, ordered by seq."""
        def query() -> list[tuple[bytes, bytes, int]]:
            rows: list[tuple[bytes, bytes, int]] = []
            for chunk in _chunks(keys):
                sql = f"SELECT key, value, seq FROM entries WHERE key IN ({_marks(len(chunk))})"
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
        def query() -> bytes | None:
            rows = self.conn.execute("SELECT data FROM blobs WHERE digest = ?",
                                     (blob_digest,)).fetchall()
            return bytes(rows[0][0]) if rows else None  # type: ignore[arg-type]
        return self.run(query)

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        """Return {digest: data} of those of *digests* present in this layer."""
        def query() -> dict[bytes, bytes]:
            found: dict[bytes, bytes] = {}
            for chunk in _chunks(digests):
                sql = f"SELECT digest, data FROM blobs WHERE digest IN ({_marks(len(chunk))})"
                found.update((bytes(d), bytes(data)) for d, data in self.conn.execute(sql, chunk))
            return found
        return self.run(query)

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
            return LayerStats(path=self.path, role=role, entries=int(one(
                "SELECT count(*) FROM entries")), blobs=int(one("SELECT count(*) FROM blobs")),
                blob_bytes=int(one("SELECT coalesce(sum(size), 0) FROM blobs")),
                file_bytes=file_bytes, schema_version=int(c.pragma("user_version")),
                labels=labels, counters=counters)
        return self.run(query)

    # -- writes (top only) ---------------------------------------------------------------

    def write(self, blobs: Mapping[bytes, bytes],
              entries: Sequence[tuple[str, bytes, bytes, bytes]],
              slots: Sequence[tuple[bytes, float, bytes]], counters: Mapping[str, int],
              check_refs: Sequence[bytes]) -> int:
        """Insert everything in ONE transaction; return the bytes of newly stored blobs.

        Raises ValueError (nothing written) if one of *check_refs* is neither in *blobs* nor
        already in this layer.
        """
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
                conn.executemany("INSERT OR IGNORE INTO entries (label, key, value, refs, "
                                 "created) VALUES (?, ?, ?, ?, ?)",
                                 [(label, key, value, refs, now)
                                  for label, key, value, refs in entries])
                conn.executemany("INSERT OR REPLACE INTO slots (key, mtime, data) "
                                 "VALUES (?, ?, ?)", slots)
                conn.executemany("INSERT INTO counters (name, value) VALUES (?, ?) "
                                 "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                                 list(counters.items()))
            return new_bytes
        return self.run(txn)


class Store:
    """A writable top layer (optional) over read-only bases.

    Layer numbers in :class:`Entry`: 0 is the top, base ``i`` (0-based in *bases*) is
    ``i + 1`` (also when there is no top).  The top is created with its parent directories
    when the Store is opened; bases must exist and are opened ``mode=ro``.  Raises StoreError
    if a file cannot be opened or is not a store of a schema this version reads.
    """

    def __init__(self, top: str | None, bases: Sequence[str] = (), *,
                 busy_timeout_ms: int = 60_000) -> None:
        self._lock = threading.RLock()
        self._layers: list[tuple[int, Layer]] = []
        try:
            if top is not None:
                self._layers.append(
                    (0, Layer(top, writable=True, busy_timeout_ms=busy_timeout_ms)))
            for i, base in enumerate(bases):
                self._layers.append(
                    (i + 1, Layer(base, writable=False, busy_timeout_ms=busy_timeout_ms)))
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
        wanted = list(dict.fromkeys(digests))
        found: dict[bytes, bytes] = {}
        with self._lock:
            for _, layer in self._layers:
                if not wanted:
                    break
                found.update(layer.get_blobs(wanted))
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
        wanted = list(dict.fromkeys(keys))
        found: dict[bytes, tuple[float, bytes]] = {}
        with self._lock:
            for _, layer in self._layers:
                if not wanted:
                    break
                found.update(layer.get_slots(wanted))
                wanted = [k for k in wanted if k not in found]
        return found

    def put(self, *, entries: Sequence[tuple[str, bytes, bytes, Sequence[bytes]]] = (),
            blobs: Iterable[bytes] = (), slots: Sequence[tuple[bytes, float, bytes]] = (),
            counters: Mapping[str, int] = {}) -> int:
        """Write to the top in ONE short transaction; return the bytes of new blobs.

        entries are (label, key, value, refs); refs are digests of blobs the entry needs.
        Blobs are inserted by digest (INSERT OR IGNORE), then entries (INSERT OR IGNORE,
        unique on (key, value)); slots replace; counters are added (value += delta).
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
        with self._lock:
            # Bases never change: check them outside the write transaction to keep it short.
            for layer in self._bases:
                if needed:
                    needed -= layer.have_blobs(sorted(needed))
            return self._top.write(by_digest, rows, slots, counters, sorted(needed))

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
