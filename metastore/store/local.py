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
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from metastore.store.api import (
    DIGEST_SIZE, ORPHAN_GRACE_S, Base, Entry, LayerStats, StoreError, digest, now)
from metastore.store import slots as slot_rows
from metastore.store.layer import Layer
from metastore.store.sqlite import (
    TRIM_BATCH, TRIM_BUDGET_S, TRIM_LOW_WATER, _error, _refs_of)

V = TypeVar("V")


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
        return self._in_some_layer(digests, Layer.intact)

    def have_blobs(self, digests: Sequence[bytes]) -> set[bytes]:
        """Return those of *digests* present in some layer (no blob data is read)."""
        return self._in_some_layer(digests, Layer.have_blobs)

    def _in_some_layer(self, digests: Sequence[bytes],
                       per_layer: Callable[[Layer, Sequence[bytes]], set[bytes]]) -> set[bytes]:
        """Those of *digests* that *per_layer* finds in some layer, asking each layer (top
        first) only for those not found above it."""
        wanted = list(dict.fromkeys(digests))
        found: set[bytes] = set()
        with self._lock:
            for _, layer in self._layers:
                if not wanted:
                    break
                found |= per_layer(layer, wanted)
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

    def get_slots(self, keys: Sequence[bytes], *, kind: str = ""
                  ) -> dict[bytes, tuple[float, bytes]]:
        """Return {key: (mtime, data)} for those of *keys* found in any layer (top first,
        then bases in order); one query per layer per 500 keys.  *kind*, the kind of the
        slots asked for, matters only to a tiered store (local kinds stay local)."""
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
            blobs: Iterable[bytes] = (), slots: Sequence[slot_rows.SlotRow] = (),
            counters: Mapping[str, int] = {}, used: Iterable[tuple[int, int]] = (),
            used_slots: Iterable[bytes] = (), recoverable: bool = False) -> int:
        """Write to the top in ONE short transaction; return the bytes of new blobs.

        entries are (label, key, value, refs); refs are digests of blobs the entry needs.
        Blobs are inserted by digest (INSERT OR IGNORE), then entries (INSERT OR IGNORE,
        unique on (key, value)); slots, (key, mtime, data[, kind]), replace (*kind*: an
        opaque short label, grouped by in stats); counters are added (value += delta).
        *used*: (layer, seq) of entries (as from :meth:`lookup`) used since the last put:
        the top's get a coarse last-use time (bases are never written); with ``copy_hits``,
        base entries are copied into the top with their blobs.  *used_slots*: keys of slots
        read since the last put: the top's get a coarse last-use time too (slots and entries
        share one LRU).  *recoverable*: what is written is also held by a remote tier
        (then the close-time checkpoint is left to a later writer: see
        :meth:`metastore.store.layer.Layer.close`).  Afterwards, if the top
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
                                      touch=touch, copies=copies, copy_blobs=copy_blobs,
                                      touch_slots=sorted(set(used_slots)),
                                      recoverable=recoverable and not copies)
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
        """Evict least recently used entries and slots of the top (one LRU: whichever was
        used longer ago goes first) until its live size (see
        :class:`SizeInfo`) is at most TRIM_LOW_WATER * *max_size* (when over *max_size*),
        and delete orphan blobs older than *grace_s*; stop after *budget_s* seconds if given.

        Returns (entries evicted, blobs deleted, bytes of blobs deleted); slots evicted are
        counted in the ``evicted_slots`` counter.  *progress* is
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
                    result, slots = slot_rows.evict_oldest(top, TRIM_BATCH)
                    if not (result.entries or slots):
                        break
                    evicted += result.entries
                    orphaned_bytes += result.orphaned_bytes
                    if progress is not None:
                        progress(evicted, orphaned_bytes)
                    size = top.size()
            if size.oldest_orphan is not None and size.oldest_orphan <= now() - grace_s:
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

