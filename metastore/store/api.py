"""The store's vocabulary, free of SQLite (what the layers above may import): errors, the
content digest, what lookups return, what a layer reports, and the timing constants the
mypy layer relies on. Knows nothing of mypy."""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import blake3

DIGEST_SIZE = 32
#: Last-use times are written at most once per this many seconds per entry (coarse LRU).
TOUCH_GRAIN_S = 3600
#: Blobs of evicted entries are deleted only after this many seconds, so that a run that
#: chose an entry before it was evicted still finds its blobs.
ORPHAN_GRACE_S = 3600


#: Added to the bookkeeping clock (:func:`now`): a soak test simulating months of use in
#: minutes sets ``METASTORE_CLOCK_OFFSET_S`` per run (benchmarks/soak.py). Unset: 0.
_CLOCK_OFFSET_S = float(os.environ.get("METASTORE_CLOCK_OFFSET_S") or 0)


def now() -> float:
    """The clock of the store's bookkeeping - last-use times, eviction, orphan grace, slot
    times - never of anything compared with files' timestamps (those use ``time.time``)."""
    return time.time() + _CLOCK_OFFSET_S


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
    slot_kinds: dict[str, tuple[int, int]] = {}  # kind -> (slots, bytes); see Store.put


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


