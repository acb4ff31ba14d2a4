"""Content keys of source files, remembered by their stat so unchanged files are not re-read.

A unit is keyed on the blake3 digest of the source file mypy will use. Hashing every
source on every run costs reading all of them; like git's index and ccache's manifest
files, :class:`SourceKeys` remembers each file's digest together with its stat
(size, mtime_ns, inode, ctime_ns) and trusts the remembered digest while the stat is
unchanged. A file edited within the timestamp granularity of the moment its digest was
recorded could keep an identical stat, so such "racy" digests are never recorded: a
digest is remembered only for a file whose mtime and ctime are older than a moment before
it was stat'ed by at least the file system's timestamp granularity with a margin -
:data:`RACY_SECONDS` where timestamps are whole seconds (FAT, HFS+, ext3, some network
file systems), :data:`RACY_SUBSECOND_SECONDS` where they have sub-second parts (a
modification then gets a timestamp of the kernel's clock tick, at most 10 ms old). (Stock
mypy trusts mtime and size alone to skip re-hashing; this is stricter.)

The memo lives in the store's slots (mutable, keyed by a digest of the absolute path) and
is written with the run's other writes; it knows nothing of mypy or SQLite.
"""

from __future__ import annotations

import os
import stat as statmod
import struct
import time
from collections.abc import Callable, Sequence

from metastore.store.api import digest

#: Timestamp granularity margin for whole-second timestamps: no file system we support is
#: coarser (FAT: 2 s).
RACY_SECONDS = 2.0
#: The margin for sub-second timestamps: ten times the coarsest clock tick Linux stamps
#: files with (HZ=100); macOS and Windows stamp them finer.
RACY_SUBSECOND_SECONDS = 0.1
_RECORD = struct.Struct("<qqqq32s")  # size, mtime_ns, ino, ctime_ns, digest
_SLOT_PREFIX = b"\0source-key\0"
_DIRECTORY_KEY = digest(b"\0namespace-package-directory")


class SourceFile:
    """A module source: its content key, the stat mypy will compare and, when asked for
    (publishing needs it, offering does not), the sha1 mypy records.

    Raises OSError if the file cannot be read or changed while it was read.
    """

    def __init__(self, path: str, *, with_sha1: bool = False,
                 st: os.stat_result | None = None, key: bytes | None = None) -> None:
        if st is None:
            st = os.stat(path)
        self.path = path
        self.stat = st
        self.mtime = int(st.st_mtime)
        self.size = st.st_size
        self.sha1 = ""
        self.is_dir = statmod.S_ISDIR(st.st_mode)
        self.was_read = False
        if self.is_dir:
            self.key = _DIRECTORY_KEY
            return
        if key is not None and not with_sha1:
            self.key = key
            return
        data, after = _read(path, st.st_size)
        if len(data) != st.st_size or signature(after) != signature(st):
            raise OSError(f"{path} changed while it was read")
        if with_sha1:
            from mypy.util import hash_digest

            self.sha1 = hash_digest(data)
        self.key = digest(data)
        self.was_read = True


def _read(path: str, size: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the file at ``path`` (at most ``size`` + 1: one more than expected means
    it grew) and its stat once read (of the file read, even if ``path`` was replaced since).
    Plain file descriptors: a buffered file object costs more than reading a small file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        chunks = []
        left = size + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), os.fstat(fd)
    finally:
        os.close(fd)


class SourceKeys:
    """Source files by path for one run, using and refreshing the stat memo.

    ``get_slots`` returns {slot key: (recorded time, record)} for the keys it is given;
    :meth:`pending` gives the slots to write back (``(key, recorded time, record)``).
    """

    def __init__(self, get_slots: Callable[[Sequence[bytes]], dict[bytes, tuple[float, bytes]]],
                 *, now: Callable[[], float] = time.time) -> None:
        self._get_slots = get_slots
        self._now = now
        self._files: dict[str, SourceFile | None] = {}
        self._pending: dict[bytes, tuple[float, bytes]] = {}
        self._cwd = os.getcwd()  # mypy's paths are relative to it; it does not change

    def get(self, paths: Sequence[str], *, remember: bool = True
            ) -> dict[str, SourceFile | None]:
        """The source file at each path (None if it cannot be read), with one memo lookup
        for all paths not seen before in this run. Without ``remember``, the memo is
        neither asked nor written: for files of a checkout new to the store, whose
        signatures a run snapshot records anyway."""
        before = self._now()  # earlier than every stat below (see old_enough)
        todo: dict[str, tuple[bytes, os.stat_result | None]] = {}
        for path in paths:
            if path in self._files or path in todo:
                continue
            try:
                st: os.stat_result | None = os.stat(path)
            except OSError:
                st = None
            todo[path] = (_slot_key(path, self._cwd) if remember else b"", st)
        memo: dict[bytes, tuple[float, bytes]] = {}
        wanted = [slot for slot, st in todo.values()
                  if remember and st is not None and statmod.S_ISREG(st.st_mode)]
        if wanted:
            try:
                memo = self._get_slots(wanted)
            except Exception:
                memo = {}  # the memo is an optimisation: without it, files are read
        for path, (slot, st) in todo.items():
            if st is None:
                self._files[path] = None
                continue
            remembered = memo.get(slot)
            known = _remembered_key(remembered[1], st) if remembered is not None else None
            try:
                source = SourceFile(path, st=st, key=known)
            except OSError:
                self._files[path] = None
                continue
            self._files[path] = source
            if remember and source.was_read and old_enough(st, before):
                self._pending[slot] = (before, _RECORD.pack(*signature(st), source.key))
        return {path: self._files[path] for path in paths}

    def known(self, path: str) -> SourceFile | None:
        """The source file at ``path`` if this run already looked at it, else None."""
        return self._files.get(path)

    def pending(self) -> list[tuple[bytes, float, bytes]]:
        """Memo records of files read since the last call (and forget them)."""
        records = [(slot, recorded, data) for slot, (recorded, data) in self._pending.items()]
        self._pending.clear()
        return records


def _slot_key(path: str, cwd: str) -> bytes:
    """The memo slot of the file at ``path`` (``os.path.abspath`` with ``cwd`` given: it
    would ask the OS for the current directory once per file)."""
    absolute = os.path.normpath(os.path.join(cwd, path))
    return digest(_SLOT_PREFIX + absolute.encode("utf-8", "surrogateescape"))


def signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies a file's content while it is unchanged: size, mtime_ns, inode and
    ctime_ns (trusted only for stats that are :func:`old_enough`)."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _remembered_key(record: bytes, st: os.stat_result) -> bytes | None:
    if len(record) != _RECORD.size:
        return None
    size, mtime_ns, ino, ctime_ns, key = _RECORD.unpack(record)
    if (size, mtime_ns, ino, ctime_ns) != signature(st):
        return None
    return bytes(key)


def old_enough(st: os.stat_result, before: float) -> bool:
    """True if the file's mtime and ctime are older than ``before`` - a moment no later than
    when ``st`` was taken - by the timestamp granularity margin (:data:`RACY_SECONDS`, or
    :data:`RACY_SUBSECOND_SECONDS` if either timestamp has a sub-second part): an edit after
    the stat cannot leave the same :func:`signature`."""
    mtime_ns, ctime_ns = st.st_mtime_ns, st.st_ctime_ns
    whole = mtime_ns % 1_000_000_000 == 0 and ctime_ns % 1_000_000_000 == 0
    margin = RACY_SECONDS if whole else RACY_SUBSECOND_SECONDS
    return before - max(mtime_ns, ctime_ns) / 1e9 >= margin
