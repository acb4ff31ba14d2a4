"""SQLite through apsw: the schema of a store file, its constants, and the two places every
statement goes through - :func:`guarded` (one-line errors, retries while busy) and
:func:`transaction` (short write transactions)."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import apsw


from metastore.store.api import DIGEST_SIZE, StoreError

T = TypeVar("T")


#: ``PRAGMA application_id`` of a store file: ASCII "myms".
APPLICATION_ID = 0x6D796D73
#: ``PRAGMA user_version`` of the schema written by this code.  Version 1 and 2 files are
#: read as bases as they are; a writable older top is migrated when it is opened.
SCHEMA_VERSION = 3
#: Page size of new store files (existing files keep theirs). Most blobs are mypy data
#: and meta files of 1-100 KiB: with 16 KiB pages one spans a quarter of the overflow
#: pages it needs with SQLite's default 4 KiB (a quarter of the page reads, measured
#: 5.2 -> 4.0 ms for the 9 MiB of data a warm run of pip digest-checks), and the lookup
#: B-tree is a level or two shallower in a store of a million entries.
PAGE_SIZE = 16384

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

# Version 3: slots join the LRU.  ``kind`` is an opaque short label the writer gives a slot
# (the store only groups by it in stats); ``used`` is its coarse last-use time, set when it
# is written and touched (at most once per TOUCH_GRAIN_S) when a reader says it used it.
# Existing slots count as used when they were last written.
_MIGRATE_V3 = """
ALTER TABLE slots ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE slots ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
UPDATE slots SET used = min(CAST(mtime AS INTEGER), CAST(strftime('%s', 'now') AS INTEGER));
CREATE INDEX slots_used ON slots (used);
"""


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


