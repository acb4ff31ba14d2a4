"""Scratch pad: an ephemeral key-value file shared by the processes of ONE run.

The coordinator and its parallel workers open the same path; what one process put() and
commit()ted is visible to the others' get().  The file is deleted after the run
(:func:`remove_scratch`); leftovers of killed runs are removed by :func:`prune_scratch_dir`.
Errors of the file are raised as :class:`metastore.store.api.StoreError` (one line).
"""

from __future__ import annotations

import os
import time

import apsw

from metastore.store.api import StoreError
from metastore.store.sqlite import guarded, transaction

_SUFFIXES = ("-wal", "-shm", "-journal")


class ScratchPad:
    """A small apsw database of (name -> bytes); not shareable across fork() or threads."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 60_000) -> None:
        """Open (creating the file and its directories) the scratch pad at *path*."""
        self.path = os.path.abspath(path)
        self._pending: dict[str, bytes] = {}
        self._conn: apsw.Connection | None = None
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the scratch directory "
                             f"({exc.strerror}); check TMPDIR or the permissions") from exc
        self._conn = guarded(self.path, lambda: self._open(busy_timeout_ms))

    def _open(self, busy_timeout_ms: int) -> apsw.Connection:
        conn = apsw.Connection(self.path)
        try:
            # Wait for the other processes' write locks instead of failing at once.
            conn.set_busy_timeout(busy_timeout_ms)
            # WAL: the processes of the run read each other's committed writes without
            # blocking the writer.
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            # OFF: the file is deleted after the run; a crash loses the run anyway.
            conn.execute("PRAGMA synchronous = OFF")
            # Race-safe: the second process to get the write lock sees the table and skips.
            conn.execute("CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, data BLOB)")
            return conn
        except BaseException:
            conn.close()
            raise

    @property
    def _db(self) -> apsw.Connection:
        if self._conn is None:
            raise ValueError(f"{self.path}: scratch pad is closed")
        return self._conn

    def get(self, name: str) -> bytes | None:
        """Return the data of *name*: this process's uncommitted put, else the last commit."""
        if name in self._pending:
            return self._pending[name]
        conn = self._db

        def query() -> bytes | None:
            rows = conn.execute("SELECT data FROM kv WHERE name = ?", (name,)).fetchall()
            return bytes(rows[0][0]) if rows else None  # type: ignore[arg-type]
        return guarded(self.path, query)

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        """Committed (name, data) pairs whose name starts with *prefix*, by name."""
        conn = self._db
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"

        def query() -> list[tuple[str, bytes]]:
            rows = conn.execute(
                "SELECT name, data FROM kv WHERE name >= ? AND name < ? ORDER BY name",
                (prefix, upper)).fetchall()
            return [(str(n), bytes(d)) for n, d in rows]  # type: ignore[arg-type]
        return guarded(self.path, query)

    def put(self, name: str, data: bytes) -> None:
        """Set *name* to *data*; visible to other processes after :meth:`commit`."""
        self._pending[name] = bytes(data)

    def commit(self) -> None:
        """Write the pending puts in one short transaction (StoreError if it fails)."""
        if not self._pending:
            return
        conn, rows = self._db, list(self._pending.items())

        def txn() -> None:
            with transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO kv (name, data) VALUES (?, ?)", rows)
        guarded(self.path, txn)
        self._pending.clear()

    def close(self) -> None:
        """Close the file; uncommitted puts are discarded.  Idempotent."""
        self._pending.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except apsw.Error:
                pass


def remove_scratch(path: str) -> None:
    """Delete the scratch pad at *path* with its -wal/-shm files; missing files are fine."""
    for name in (path, *(path + suffix for suffix in _SUFFIXES)):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def prune_scratch_dir(dir: str, older_than_s: float) -> int:
    """Delete scratch pads in *dir* not modified for *older_than_s* seconds; return #files.

    A pad and its -wal/-shm/-journal files are judged together by the newest mtime among
    them, so a live pad is never half-deleted.  Subdirectories are left alone; a missing
    *dir* prunes nothing.
    """
    try:
        names = [e for e in os.scandir(dir) if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    groups: dict[str, list[tuple[str, float]]] = {}
    for entry in names:
        base = entry.path
        for suffix in _SUFFIXES:
            if base.endswith(suffix):
                base = base[:-len(suffix)]
                break
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        groups.setdefault(base, []).append((entry.path, mtime))
    cutoff = time.time() - older_than_s
    removed = 0
    for files in groups.values():
        if max(mtime for _, mtime in files) < cutoff:
            for path, _ in files:
                try:
                    os.unlink(path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed
