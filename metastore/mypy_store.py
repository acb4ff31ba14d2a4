"""mypy's metadata-store protocol, implemented on a content-addressed store.

mypy names its entries after modules (``pkg/mod.meta.ff``, ``pkg/mod.data.ff``,
``pkg/mod.meta_ex.ff``; 1.20: ``pkg/mod.err.ff``). This module maps those names onto
*units* stored under a content key:

    key = digest(namespace, stem, blake3(source bytes))

where the namespace separates what mypy treats as globally incompatible (see
:meth:`MypyView.namespace`). A unit bundles the meta, the data and the meta_ex/err entry
of one module, published together or not at all, and never changed afterwards. Many
units may exist for one key (the same source checked against different dependencies or
options); :class:`Selector` offers the one consistent with the units chosen for the
module's dependencies.

Contract with mypy (who stays the final validator):

- A meta is offered only after the source file mypy will use was hashed and matched the
  unit's key; the offered meta then carries that file's path, mtime and size, so mypy's
  own mtime/path check passes without re-hashing. Every other check (version, options,
  plugins, dependency interface hashes) is still mypy's, on the unit's real values.
- Data entries report the constant mtime :data:`DATA_MTIME`, which metas are stored with.
- Writes are buffered per process (read-your-writes). On commit, complete units are
  published: meta and meta_ex/err written in this run, data written in this run or
  reused from the offered unit - and only if the data matches the meta's interface hash
  and the source file still matches the meta's sha1. Touch writes (mypy refreshing a
  meta's mtime/path) are thereby absorbed, never published.
- With parallel workers, the processes of one build share a scratch pad: the
  coordinator pins the units it offered, workers publish each write there, so every
  process sees the same entries mypy's own commits would have shown it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

from metastore.cache_codec import DATA_MTIME, Codec, canonical_json, plugins_snapshot_bytes
from metastore import run_snapshot, selection
from metastore.mypy_view import MypyView
from metastore.paths import Roots
from metastore.session import Session
from metastore.source_files import SourceFile, SourceKeys, old_enough, signature
from metastore.store import TOUCH_GRAIN_S, Entry, StoreError, digest

PLUGINS_SNAPSHOT = "@plugins_snapshot.json"
# Module entries; names starting with "@" are mypy's global entries (@plugins_snapshot.json,
# and for --cache-fine-grained @deps.meta.json and @root.deps.json), kept in slots.
_UNIT_NAME = re.compile(
    r"^(?P<stem>[^@].*)\.(?P<part>meta|data|meta_ex|err)\.(?P<fmt>ff|json)$")
#: How often a coordinator (or serial) process publishes while mypy runs (see commit()).
PUBLISH_INTERVAL_S = 1.0
_IGNORED_OPTIONS = ("local_partial_types", "is_parallel", "debug_cache")
#: The portable run snapshot slot holds this and the key of the snapshot slot it stands for.
_SNAPSHOT_POINTER = b"\0snapshot-slot\0"
#: A run snapshot's signature for a file whose stat was too recent to be trusted.
_UNTRUSTED_SIGNATURE = (-1, -1, -1, -1)


if TYPE_CHECKING:  # Protocol classes cost time to create; only the type checker needs them.
    class Backend(Protocol):
        """The part of :class:`metastore.store.Store` this layer uses."""

        def lookup(self, keys: Sequence[bytes]) -> dict[bytes, list[Entry]]: ...
        def get_blob(self, digest: bytes) -> bytes | None: ...
        def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]: ...
        def get_slot(self, key: bytes) -> tuple[float, bytes] | None: ...
        def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, tuple[float, bytes]]: ...
        def intact_blobs(self, digests: Sequence[bytes]) -> set[bytes]: ...
        @property
        def base_paths(self) -> tuple[str, ...]: ...
        def put(
            self,
            *,
            entries: Sequence[tuple[str, bytes, bytes, Sequence[bytes]]] = ...,
            blobs: Iterable[bytes] = ...,
            slots: Sequence[tuple[bytes, float, bytes]] = ...,
            counters: Mapping[str, int] = ...,
            used: Iterable[tuple[int, int]] = ...,
        ) -> int: ...

    class Scratch(Protocol):
        """The part of :class:`metastore.scratch.ScratchPad` this layer uses."""

        def get(self, name: str) -> bytes | None: ...
        def put(self, name: str, data: bytes) -> None: ...
        def commit(self) -> None: ...
        def close(self) -> None: ...
        def items(self, prefix: str) -> list[tuple[str, bytes]]: ...


class RunStats:
    """Counters of one process's use of the store during one build."""

    COUNTERS = ("offered", "missed", "rechecked", "published", "meta_writes",
                "read_bytes", "written_bytes", "store_seconds", "ambiguous", "search_steps",
                "mismatched", "select_seconds")

    def __init__(self) -> None:
        self.offered = 0
        self.missed = 0
        self.rechecked = 0
        self.published = 0
        self.meta_writes = 0
        self.read_bytes = 0
        self.written_bytes = 0
        self.store_seconds = 0.0
        # Selection (see metastore.selection): modules with several usable units left after
        # the obvious ones were settled, search steps, dependency edges left disagreeing
        # (each costs a re-check), and the time spent choosing (lookups included).
        self.ambiguous = 0
        self.search_steps = 0
        self.mismatched = 0
        self.select_seconds = 0.0
        self.layer_hits: list[int] = [0]  # metas offered per layer: top, then each base
        self.problems: list[str] = []

    def hit(self, layer: int, count: int = 1) -> None:
        """Count ``count`` metas offered from ``layer`` (0 the top, i + 1 base i)."""
        while len(self.layer_hits) <= layer:
            self.layer_hits.append(0)
        self.layer_hits[layer] += count

    def selected(self, outcome: selection.Outcome, seconds: float) -> None:
        """Count one selection's cost."""
        self.ambiguous += outcome.ambiguous
        self.search_steps += outcome.steps
        self.mismatched += outcome.mismatches
        self.select_seconds += seconds

    def add(self, other: dict[str, Any]) -> None:
        """Add another process's counters (as from :meth:`as_dict`)."""
        for name in self.COUNTERS:
            setattr(self, name, getattr(self, name) + other.get(name, 0))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.COUNTERS}

    def line(self, store_path: str) -> str:
        """The per-run line printed with ``--metastore-stats``."""
        return (
            f"mypy-metastore: offered={self.offered} missed={self.missed} "
            f"rechecked={self.rechecked} published={self.published} "
            f"meta_writes={self.meta_writes} read_bytes={self.read_bytes} "
            f"written_bytes={self.written_bytes} store_seconds={self.store_seconds:.3f} "
            f"layer_hits={','.join(map(str, self.layer_hits))} ambiguous={self.ambiguous} "
            f"search_steps={self.search_steps} mismatched={self.mismatched} "
            f"select_seconds={self.select_seconds:.3f} store={store_path}"
        )


class Manifest(NamedTuple):
    """The small value stored for a unit: where its parts are and what selection needs."""

    path: str  # tokenised path mypy used
    bound: str  # roots fingerprint if the unit only holds at these roots, else ""
    meta: str  # blob digests, hex
    data: str
    ex: str
    ex_part: str  # "meta_ex" (2.x) or "err" (1.20)
    interface_hash: str
    deps: tuple[tuple[str, str], ...]
    options: str
    local_partial_types: bool
    is_parallel: bool

    def encode(self) -> bytes:
        return canonical_json({
            "p": self.path, "b": self.bound, "m": self.meta, "d": self.data, "x": self.ex,
            "xp": self.ex_part, "h": self.interface_hash, "deps": self.deps,
            "o": self.options, "lp": self.local_partial_types, "par": self.is_parallel,
        }).encode()

    @classmethod
    def of_snapshot_unit(cls, unit: tuple[str, str, str, str, str, str, str, str, bool, bool]
                         ) -> Manifest:
        """The manifest a run snapshot records (see :attr:`run_snapshot.Record.unit`), without
        its dependencies."""
        path, bound, meta, data, ex, ex_part, interface_hash, options, lp, par = unit
        return cls(path, bound, meta, data, ex, ex_part, interface_hash, (), options, lp, par)

    def snapshot_unit(self) -> tuple[str, str, str, str, str, str, str, str, bool, bool]:
        """This manifest as a run snapshot records it (the inverse of
        :meth:`of_snapshot_unit`)."""
        return (self.path, self.bound, self.meta, self.data, self.ex, self.ex_part,
                self.interface_hash, self.options, self.local_partial_types, self.is_parallel)

    @classmethod
    def decode(cls, value: bytes) -> Manifest | None:
        try:
            raw = json.loads(value)
            return cls(
                path=raw["p"], bound=raw["b"], meta=raw["m"], data=raw["d"], ex=raw["x"],
                ex_part=raw["xp"], interface_hash=raw["h"],
                deps=tuple((str(a), str(b)) for a, b in raw["deps"]), options=raw["o"],
                local_partial_types=bool(raw["lp"]), is_parallel=bool(raw["par"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


#: A module's entry during selection: (path mypy uses, its source, usable candidates as
#: (layer, seq, manifest)), or None if the module cannot be offered.
_Candidates: TypeAlias = "tuple[str, SourceFile, list[tuple[int, int, Manifest]]]"
_Found: TypeAlias = "_Candidates | None"


class Offer(NamedTuple):
    """The unit chosen for one module in this run, patched for the file on disk."""

    stem: str
    path: str  # the path mypy uses
    manifest: Manifest
    mtime: int
    size: int
    layer: int = -1  # where the unit was found (see metastore.store.Entry); -1: unknown
    seq: int = -1
    #: The last unit published for the module, offered for an edited file only so that
    #: mypy learns the old interface hash (see :meth:`MypyStore._offer_previous`).
    previous: bool = False
    key: bytes = b""  # the unit's key, where known


def options_key(options: dict[str, object]) -> str:
    """A meta's per-module options without the fields mypy compares separately."""
    return canonical_json({k: v for k, v in options.items() if k not in _IGNORED_OPTIONS})


def module_id(stem: str) -> str:
    parts = stem.split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stem_for(module: str, path: str) -> str:
    stem = "/".join(module.split("."))
    if os.path.basename(path).startswith("__init__."):
        stem += "/__init__"
    return stem


class MypyStore:
    """One process's view of the store during one mypy build.

    ``locate`` returns mypy's ``BuildManager`` for this build (or None if it cannot be
    found, in which case nothing is offered and nothing is published).
    """

    def __init__(
        self,
        backend: Backend | None,
        locate: Callable[[], Any | None],
        *,
        store_path: str,
        report: Callable[[str], None],
    ) -> None:
        self.backend = backend
        self._locate = locate
        self.store_path = store_path
        self._report = report
        self.stats = RunStats()
        self._view: MypyView | None = None
        self._manager: Any | None = None
        self._view_failed = False
        self._ns: bytes = b""
        self._label = ""
        self._codec: Codec | None = None
        # Read-your-writes: every entry written in this run, by name.
        self._written: dict[str, bytes] = {}
        self._slot_writes: dict[str, tuple[float, bytes]] = {}
        self._unpublished_slots: set[str] = set()
        self._seq = 0
        self._write_seq: dict[str, int] = {}
        self._published_seq: dict[str, int] = {}
        self._stems: dict[str, str] = {}
        self._paths: dict[str, str] = {}  # module -> the path mypy uses, once found
        self._sources_selected = False
        # The run snapshot (see metastore.run_snapshot): read at the first offer, written
        # at the end of the build if it changed.
        self._snapshot_tried = False
        self._snapshot: run_snapshot.Snapshot | None = None  # the snapshot read
        self._snapshot_read: bytes | None = None  # its bytes, if it is this checkout's
        self._snapshot_keys_memo: tuple[bytes, bytes] | None = None
        self._snapshot_stem_index: dict[str, int] | None = None
        self._snapshot_base = b""  # the slot of the (full) snapshot read
        # stem -> (path, record index) of the units this checkout's last run had, for
        # modules mypy resolves the same: each is that module's previous unit (see
        # _offer_previous).
        self._last_run: dict[str, tuple[str, int]] = {}
        self._from_snapshot: set[str] = set()  # stems offered from it
        self._snapshot_resolved = False  # entries of units it named by key were looked up
        self._snapshot_stale = False  # some record was taken by content: write it anew
        # Entries served as the snapshot recorded them (name -> bytes), the data entries of
        # their units, and the names mypy read through the fast path of read().
        self._image_parts: dict[str, bytes] = {}
        self._image_data: set[str] = set()
        self._image_stems: set[str] = set()
        self._fast_reads = False  # read()/getmtime() answer from those first (no workers)
        self._fast_taken: list[str] = []
        # stem -> the unit published for it in this build (by this process, or - in the
        # coordinator, gathered at the end - by a parallel worker)
        self._published_units: dict[str, _Published] = {}
        # Coordinator: stems a parallel worker wrote a meta for, with no unit published since
        # (the offered unit was rejected by mypy, and nothing replaces it in the snapshot).
        self._worker_unpublished: set[str] = set()
        self._stats_seen: dict[str, os.stat_result] = {}  # path -> stat, snapshot offers
        self._asked: set[str] = set()  # stems whose meta mypy read
        self._final = False
        self._started = time.time()  # earlier than every stat this store takes
        self._last_publish = time.monotonic()
        self._dirty: set[str] = set()
        self._offers: dict[str, Offer | None] = {}
        self._sources = SourceKeys(self._memo_slots)
        # stem -> what _candidates found for it in this run (modules found, files read)
        self._candidates_memo: dict[str, _Candidates] = {}
        self._blob_cache: dict[str, bytes] = {}
        self._publishing = backend is not None
        self._pinned: set[str] = set()
        self._counter_deltas: dict[str, int] = {}
        self._used: set[tuple[int, int]] = set()  # (layer, seq) of units offered, for the store
        self._session = Session.current()
        self._scratch: Scratch | None = None

    # -- mypy's protocol ---------------------------------------------------------------

    def read(self, name: str) -> bytes | None:
        """The entry ``name``, or None for a miss.

        An entry served as the run snapshot recorded it is answered first, with no other
        work (its accounting is done at the next publication; its time is not counted in
        ``store_seconds``)."""
        if self._fast_reads:
            served = self._image_parts.get(name)
            if served is not None:
                self._fast_taken.append(name)
                return served
        t0 = time.perf_counter()
        try:
            return self._read(name)
        finally:
            self.stats.store_seconds += time.perf_counter() - t0

    def getmtime(self, name: str) -> float | None:
        """The mtime of entry ``name``, or None for a miss."""
        if self._fast_reads and name in self._image_data:
            return DATA_MTIME
        t0 = time.perf_counter()
        try:
            match = _UNIT_NAME.match(name)
            if match is None:
                slot = self._get_slot(name)
                return None if slot is None else slot[0]
            if self._read(name, probe=True) is None:
                return None
            return DATA_MTIME
        finally:
            self.stats.store_seconds += time.perf_counter() - t0

    def write(self, name: str, data: bytes, mtime: float | None) -> bool:
        """Buffer a write; True (mypy treats False as a failed write)."""
        t0 = time.perf_counter()
        try:
            if name == PLUGINS_SNAPSHOT:
                return True  # the namespace already separates plugin sets
            match = _UNIT_NAME.match(name)
            if match is None:
                self._slot_writes[name] = (time.time() if mtime is None else mtime, data)
                self._unpublished_slots.add(name)
                return True
            self._written[name] = data
            self._image_parts.pop(name, None)  # read-your-writes, before the fast path
            self._image_data.discard(name)
            self._seq += 1
            self._write_seq[name] = self._seq
            stem, part = match.group("stem"), match.group("part")
            if part == "meta":
                self.stats.meta_writes += 1
            self._dirty.add(stem)
            view = self._view_or_none()
            scratch = self._session_scratch()
            if scratch is not None and view is not None and view.parallel_worker:
                scratch.put("n:" + name, data)
                if part == "meta":  # until its unit is published (see _publish)
                    scratch.put("u:" + stem, b"")
            return True
        finally:
            self.stats.store_seconds += time.perf_counter() - t0

    def commit(self) -> None:
        """Publish the complete units written since the last publication: at once in a
        parallel worker (mypy ends workers with ``os._exit``, and a worker has no close),
        else at most every :data:`PUBLISH_INTERVAL_S` and at :meth:`close`. mypy commits
        after every SCC: one transaction per module made a cold run of 2,000 modules
        spend a third of its store time in transactions."""
        t0 = time.perf_counter()
        try:
            self._commit(force=False)
        finally:
            self.stats.store_seconds += time.perf_counter() - t0

    def close(self, *, final: bool) -> RunStats:
        """Publish what is left; with ``final`` in the coordinator, gather the workers' stats
        and record the run snapshot."""
        self._final = final
        t0 = time.perf_counter()
        try:
            self._commit(force=True)
        finally:
            self.stats.store_seconds += time.perf_counter() - t0
        if self._scratch is not None:
            if self._session is not None and self._session.is_coordinator and final:
                self._gather_worker_stats()
            self._scratch.close()
            self._scratch = None
            if self._session is not None and self._session.is_coordinator and final:
                self._session.remove()
        return self.stats

    def names(self) -> list[str]:
        return sorted(self._written) + sorted(self._slot_writes)

    # -- reading -----------------------------------------------------------------------

    def _read(self, name: str, probe: bool = False) -> bytes | None:
        result = self._read_inner(name, probe)
        if _DEBUG:
            _debug(f"read {name} probe={probe} -> {None if result is None else len(result)}")
        return result

    def _read_inner(self, name: str, probe: bool = False) -> bytes | None:
        if name == PLUGINS_SNAPSHOT:
            view = self._view_or_none(partial=True)
            if view is None:
                return None
            return plugins_snapshot_bytes(view.plugins_snapshot())
        match = _UNIT_NAME.match(name)
        if match is None:
            slot = self._get_slot(name)
            return None if slot is None else slot[1]
        if name in self._written:
            return self._written[name]
        self._view_or_none()  # the session (scratch pad) depends on the build's options
        scratch = self._session_scratch()
        if scratch is not None:
            shared = scratch.get("n:" + name)
            if shared is not None:
                return shared
        stem, part = match.group("stem"), match.group("part")
        if part == "meta" and not probe:
            self._asked.add(stem)
        offer = self._offer(stem)
        if offer is None:
            if part == "meta" and not probe and not self._view_is_worker():
                self.stats.missed += 1
                self._bump("missed")
            return None
        if probe:
            return b""
        return self._unit_part(offer, part, name)

    def _unit_part(self, offer: Offer, part: str, name: str) -> bytes | None:
        """:meth:`_served_part`, counting a meta read as offered (or missed)."""
        result = self._served_part(offer, part, name)
        view = self._view
        if part == "meta" and view is not None and not view.parallel_worker:
            if result is None or offer.previous:
                self.stats.missed += 1
                self._bump("missed")
            else:
                self._count_offered([offer])
        return result

    def _count_offered(self, offers: Sequence[Offer]) -> None:
        """Count metas of ``offers`` read by mypy as offered (by layer), and their units as
        used."""
        deltas = self._counter_deltas
        deltas["offered"] = deltas.get("offered", 0) + len(offers)
        self.stats.offered += len(offers)
        by_layer = Counter(offer.layer for offer in offers)
        for layer, count in by_layer.items():
            if layer >= 0:
                self.stats.hit(layer, count)
                name = "hits_top" if layer == 0 else "hits_base"
                deltas[name] = deltas.get(name, 0) + count
        self._used.update((offer.layer, offer.seq) for offer in offers
                          if offer.layer >= 0 and offer.seq >= 0)

    def _account_fast_reads(self) -> None:
        """Record the metas mypy read through :meth:`read`'s fast path as the slow path
        would have: asked for, offered, their units used."""
        if not self._fast_taken or self._codec is None:
            return
        taken, self._fast_taken = self._fast_taken, []
        suffix = ".meta" + self._codec.suffix
        stems = [name[: -len(suffix)] for name in taken if name.endswith(suffix)]
        self._asked.update(stems)
        self._count_offered([offer for stem in stems
                             if (offer := self._offers.get(stem)) is not None])

    def _served_part(self, offer: Offer, part: str, name: str) -> bytes | None:
        """The entry ``name`` (``part`` of ``offer``'s unit) as mypy is given it: the meta
        patched with the path, mtime and size of the file, paths resolved against this
        run's roots; None if it cannot be made."""
        served = self._image_parts.get(name)
        if served is not None:
            return served
        view, codec = self._view, self._codec
        assert view is not None and codec is not None
        manifest = offer.manifest
        roots = view.roots()
        if part == "meta":
            blob = self._blob(manifest.meta)
            data_file = name[: -len(".meta" + codec.suffix)] + ".data" + codec.suffix
            # data_mtime is DATA_MTIME already: units are published with it.
            return None if blob is None else codec.patched_meta(
                blob, data_file, path=offer.path, mtime=offer.mtime, size=offer.size)
        if part == "data":
            blob = self._blob(manifest.data)
            if blob is None or manifest.path == offer.path:
                return blob
            return codec.replace_data_path(blob, manifest.path, offer.path)
        if part != manifest.ex_part:
            return None
        blob = self._blob(manifest.ex)
        if blob is None or not roots.may_hold_tokens(blob):
            return blob
        unresolved: list[str] = []

        def resolve(stored: str) -> str:
            resolved = roots.resolve(stored)
            if resolved is None:
                unresolved.append(stored)
                return stored
            return resolved

        mapped = codec.map_error_files(part, blob, resolve)
        return None if unresolved else mapped

    def _blob(self, hex_digest: str) -> bytes | None:
        cached = self._blob_cache.get(hex_digest)
        if cached is not None:
            return cached
        if self.backend is None:
            return None
        try:
            blob = self.backend.get_blob(bytes.fromhex(hex_digest))
        except StoreError as e:
            self._problem(str(e))
            return None
        if blob is not None:
            self.stats.read_bytes += len(blob)
            if len(blob) < 65536:
                self._blob_cache[hex_digest] = blob
        return blob

    def _prefetch(self, hex_digests: Sequence[str]) -> None:
        """Put the blobs ``hex_digests`` in the blob cache with one store query."""
        wanted = [d for d in dict.fromkeys(hex_digests) if d not in self._blob_cache]
        if not wanted or self.backend is None:
            return
        try:
            found = self.backend.get_blobs([bytes.fromhex(d) for d in wanted])
        except StoreError as e:
            self._problem(str(e))
            return
        for raw, blob in found.items():
            self.stats.read_bytes += len(blob)
            self._blob_cache[raw.hex()] = blob

    def _get_slot(self, name: str) -> tuple[float, bytes] | None:
        if name in self._slot_writes:
            return self._slot_writes[name]
        if self.backend is None or self._view_or_none() is None:
            return None
        try:
            return self.backend.get_slot(self._slot_key(name))
        except StoreError as e:
            self._problem(str(e))
            return None

    def _slot_key(self, name: str) -> bytes:
        return digest(self._ns + b"\0slot\0" + name.encode())

    # -- selection -----------------------------------------------------------------------

    def _offer(self, stem: str) -> Offer | None:
        """The unit offered for ``stem`` in this run (memoised; see :meth:`_select_closure`)."""
        if stem in self._offers:
            return self._offers[stem]
        view = self._view_or_none()
        if view is None or self.backend is None:
            return None
        is_pinned, pinned = self._pinned_offer(stem)
        if is_pinned:
            self._offers[stem] = pinned
            return pinned
        if not self._snapshot_tried:
            self._snapshot_tried = True
            self._offer_from_snapshot(view)
            self._select_the_rest_of_the_snapshot(view)
        if stem not in self._offers:
            self._select_closure([stem], view)
        if view.has_workers and not view.parallel_worker:
            self._request_commit()
        return self._offers.get(stem)

    def _request_commit(self) -> None:
        """Make mypy's next ``commit()`` reach this store.

        mypy commits "any cache writes from graph loading before workers try to read them"
        (``process_graph``), but ``SqliteMetadataStore.commit`` only commits shards it
        marked dirty by a write. The coordinator's offers must reach the workers at that
        point, so mark a shard dirty as mypy's own write would. (mypy 1.20 has no such
        commit; there each pin is shared at once.)
        """
        dirty = getattr(getattr(self._manager, "metastore", None), "dirty_shards", None)
        if isinstance(dirty, set):
            dirty.add(0)
        else:
            self._share_with_session()

    def _select_closure(self, roots: Sequence[str], view: MypyView,
                        prefer: Mapping[str, str] | None = None) -> int:
        """Choose units for ``roots`` and every not-yet-chosen module their candidates depend
        on, as one consistent set (see :mod:`metastore.selection`): every recorded
        dependency hash equal to the interface hash of the unit chosen for that dependency,
        import cycles included, wherever the store holds such a set. Modules offered before
        are fixed. ``prefer`` (stem -> meta digest) names units to prefer among equals.
        A wrong choice only costs a re-check: mypy compares the hashes itself.

        Returns the number of dependency edges of the chosen units left disagreeing (with
        each other or with the modules offered before): the dependents mypy will re-check."""
        t0 = time.perf_counter()
        found: dict[str, _Found] = {}
        # Each candidate's dependencies as (dependency stem, recorded interface hash),
        # keyed by the candidate's identity; dependencies mypy has not located are left out.
        edges: dict[int, list[tuple[str, str]]] = {}
        frontier = list(roots)
        if not self._sources_selected:
            # mypy will ask for every module on its command line: choose them together with
            # the first one (one store query per level for the whole project, rather than one
            # selection per module in a project of many small import graphs).
            self._sources_selected = True
            frontier += self._source_stems(view)
        while frontier:  # breadth first: one store lookup per level of the closure
            level = [stem for stem in dict.fromkeys(frontier)
                     if stem not in found and stem not in self._offers]
            frontier = []
            found.update(self._candidates(level, view))
            for stem in level:
                entry = found[stem]
                for _, _, manifest in () if entry is None else entry[2]:
                    resolved = edges[id(manifest)] = [
                        (dep_stem, recorded) for dep, recorded in manifest.deps
                        if (dep_stem := self._stem_of(dep, view)) is not None]
                    frontier.extend(dep_stem for dep_stem, _ in resolved)
        # Modules with no unit for their source (edited files) get their previous unit
        # first: mypy keeps its interface hash, so their dependents' candidates are judged
        # against it (after an edit that keeps the interface they stay fresh).
        edited = {stem: entry for stem, entry in found.items()
                  if entry is not None and not entry[2]}
        if edited:
            self._offer_previous(edited, view)
        problem: dict[str, list[selection.Candidate]] = {}
        fixed: dict[str, str] = {}
        for stem, entry in found.items():
            if entry is None or not entry[2]:
                continue
            wanted = prefer.get(stem) if prefer is not None else None
            problem[stem] = [
                selection.Candidate(m.interface_hash, edges[id(m)],
                                    (0 if m.meta == wanted else 1, layer, -seq), layer)
                for layer, seq, m in entry[2]]
            for layer, seq, m in entry[2]:
                for dep_stem, _ in edges[id(m)]:
                    offered = self._offers.get(dep_stem)
                    if offered is not None:
                        fixed[dep_stem] = offered.manifest.interface_hash
        outcome = selection.choose(problem, fixed)
        choice: dict[str, Manifest] = {}
        for stem, index in outcome.chosen.items():
            entry = found[stem]
            assert entry is not None
            choice[stem] = entry[2][index][2]
        self.stats.selected(outcome, time.perf_counter() - t0)
        if _DEBUG:
            for stem, manifest in choice.items():
                _debug(f"choose {stem}: {len(problem[stem])} candidates, "
                       f"{outcome.why.get(stem)}")
            _debug(f"selection: {len(problem)} modules, {outcome.ambiguous} ambiguous, "
                   f"{outcome.steps} steps, {outcome.mismatches} mismatches")
        # A unit whose blobs are gone (evicted, or a damaged store) is not offered: once
        # mypy has accepted a meta it must find the data, or it crashes.
        missing = self._missing_parts(choice)
        for stem, entry in found.items():
            if stem in edited and self._offers.get(stem) is not None:
                continue  # its previous unit
            if entry is None or stem not in choice or stem in missing:
                self._offers[stem] = None
            else:
                path, source, candidates = entry
                layer, seq = next((c[0], c[1]) for c in candidates if c[2] is choice[stem])
                self._offers[stem] = Offer(stem, path, choice[stem], source.mtime, source.size,
                                           layer, seq, key=self._unit_key(stem, source.key))
        gone = {stem: entry for stem, entry in found.items()
                if entry is not None and stem in missing}
        if gone:
            self._offer_previous(gone, view)
        return outcome.mismatches

    def _source_stems(self, view: MypyView) -> list[str]:
        return [stem_for(module, path) for module, path in view.source_modules().items()]

    def _offer_previous(self, edited: Mapping[str, _Found], view: MypyView) -> None:
        """Offer each module in ``edited`` (no unit for its current source: typically an
        edited file) its previous unit, patched with a size that cannot match the file: the
        unit this checkout's last run had for it (from the run snapshot, whether offered
        or published then), else the last unit published from that file, if usable here.

        That is what stock mypy sees after an edit: it loads the old meta (keeping its
        interface hash), abandons it because the file's size differs, re-checks the module,
        and if the new interface hash equals the old one its dependents stay fresh. Without
        the old meta every dependent would be re-checked. The size makes mypy abandon the
        meta before it could trust mtime or hash, so the unit's contents are never used as
        a result. Not done where mypy keeps a meta whose size differs (Bazel mode, the
        fine-grained cache): there the module simply misses.
        """
        if self.backend is None or not view.abandons_metas_of_changed_files:
            return
        chosen: dict[str, tuple[Manifest, str, SourceFile]] = {}
        for stem, entry in edited.items():
            last = self._last_run.get(stem)
            if entry is not None and last is not None and last[0] == entry[0] \
                    and self._snapshot is not None:
                unit = self._snapshot.unit(last[1])
                chosen[stem] = (Manifest.of_snapshot_unit(unit), entry[0], entry[1])
        keys = {self._previous_key(stem, entry[1].path): stem for stem, entry in edited.items()
                if entry is not None and not entry[1].is_dir and stem not in chosen}
        try:
            slots = self.backend.get_slots(list(keys)) if keys else {}
        except StoreError as e:
            self._problem(str(e))
            return
        # A previous slot names the unit: its key and its meta digest (several units may
        # share a key).
        wanted = {keys[slot]: (value[:32], value[32:].hex()) for slot, (_, value)
                  in slots.items() if len(value) == 64}
        try:
            found = self.backend.lookup(list({key for key, _ in wanted.values()})) if wanted \
                else {}
        except StoreError as e:
            self._problem(str(e))
            return
        roots = view.roots()
        fingerprint = roots.fingerprint()
        for stem, (key, meta) in wanted.items():
            entry = edited[stem]
            assert entry is not None
            path, source, _ = entry
            for stored in found.get(key, ()):
                manifest = Manifest.decode(stored.value)
                if (manifest is not None and manifest.meta == meta
                        and self._usable(manifest, module_id(stem), path, view, roots,
                                         fingerprint)):
                    chosen[stem] = (manifest, path, source)
                    break
        # The data must be there too: if the interface did not change, mypy does not write
        # the data again, and the new unit is published with the previous unit's data.
        missing = self._missing_parts({stem: manifest for stem, (manifest, _, _)
                                       in chosen.items()})
        for stem, (manifest, path, source) in chosen.items():
            if stem not in missing:
                self._offers[stem] = Offer(stem, path, manifest, source.mtime, source.size + 1,
                                           previous=True)

    # -- the run snapshot ------------------------------------------------------------------

    def _snapshot_keys(self, view: MypyView) -> tuple[bytes, bytes]:
        """The slots of the run snapshot (computed once per build: it is read at the first
        offer and written at the end): this checkout's, for the namespace, options, roots
        (current directory included), command-line sources, parallel mode and store layers;
        and the portable one, for the namespace, options, sources and parallel mode only,
        which names the slot of the last snapshot written by any checkout (in this store, or
        in the store an exported base came from)."""
        if self._snapshot_keys_memo is not None:
            return self._snapshot_keys_memo
        roots = view.roots()
        # Relative paths mean the same in every checkout; absolute ones are tokenised.
        sources = sorted(f"{module}\0{roots.tokenize(path) if os.path.isabs(path) else path}"
                         for module, path in view.source_modules().items())
        common = [self._ns, b"1" if view.has_workers else b"0",
                  view.options_fingerprint().encode(),
                  "\n".join(sources).encode("utf-8", "surrogateescape")]
        here = [roots.fingerprint().encode(), self._layers_identity().encode(
            "utf-8", "surrogateescape")]
        if _DEBUG:
            _debug(f"snapshot keys: {common[:3]!r}, {len(sources)} sources")
        self._snapshot_keys_memo = (digest(b"\0snapshot-2\0" + b"\0".join(common + here)),
                                    digest(b"\0portable-snapshot-2\0" + b"\0".join(common)))
        return self._snapshot_keys_memo

    def _layers_identity(self) -> str:
        """What the (layer, seq) of an entry refer to: this store's layers, in order."""
        return json.dumps([self.store_path, *getattr(self.backend, "base_paths", ())])

    def _offer_from_snapshot(self, view: MypyView) -> None:
        """Offer, for every module of the last run's snapshot that is unchanged, the unit
        that run chose (see :mod:`metastore.run_snapshot`); the others are left to
        :meth:`_select_closure`. Coordinator (or serial) processes only.

        A snapshot that this store's top holds (written through the same layers) is as
        trusted as its entries: its meta and meta_ex/err entries are served as recorded
        (patched only where the file's stat or the path differs), and only the data blobs
        are checked. One from elsewhere (an exported base) names units that are looked up
        and fetched as in selection.
        """
        if self.backend is None or view.parallel_worker or self._codec is None:
            return
        found = self._read_snapshot(view)
        if found is None:
            return
        snapshot, recorded, is_here = found
        stems, modules, tokens = snapshot.stems, snapshot.modules, snapshot.paths
        roots = view.roots()
        fingerprint = roots.fingerprint()
        current = _root_paths(roots)
        # Roots whose files are other files than the recorded ones (proven by content), and
        # roots whose paths differ from those the entries were served under (patched).
        changed_roots = {name for name in snapshot.roots.keys() | current.keys()
                         if snapshot.roots.get(name) != current.get(name)}
        moved_roots = {name for name in snapshot.served_roots.keys() | current.keys()
                       if snapshot.served_roots.get(name) != current.get(name)}
        same_layers = snapshot.layers == self._layers_identity()
        options_fingerprint = view.options_fingerprint()
        same_options = bool(options_fingerprint) and snapshot.options == options_fingerprint
        # Units the recording run published are in this top; while they are younger than
        # the last-use grain, touching them would change nothing, so their entries need
        # not be looked up (their hits are the top's).
        published_recently = same_layers and time.time() - recorded < TOUCH_GRAIN_S
        stat = view.stat
        offers, known_path = self._offers, self._paths.get
        # stem -> (record index, path mypy uses, its root (see below), stat, proven by
        # content); the root is the name of the root the path is under, "." for one relative
        # to the current directory, None for another absolute path.
        chosen: dict[str, tuple[int, str, str | None, os.stat_result, bool]] = {}
        unproven: dict[str, tuple[int, str, str | None]] = {}
        for i, stem in enumerate(stems):
            token = tokens[i]
            if token.startswith("\0"):
                resolved = roots.resolve(token)
                if resolved is None:
                    continue
                path, root = resolved, Roots.root_name(token)
            else:
                path, root = token, None if os.path.isabs(token) else "."
            module = modules[i]
            if stem in offers or (known_path(module) != path
                                  and self._module_path(module, view) != path):
                continue
            if changed_roots or not same_options:
                bound = snapshot.text(i, 0)
                if bound and bound != fingerprint:
                    continue
                if not same_options:
                    options = view.options_key(module)
                    if options is not None and snapshot.text(i, 6) != options:
                        continue
            if is_here:
                self._last_run[stem] = (path, i)
            if root is not None and root in changed_roots:
                unproven[stem] = (i, path, root)  # another file: by content
                continue
            st = stat(path)
            if st is None:
                continue
            if signature(st) == snapshot.signature(i):
                chosen[stem] = (i, path, root, st, False)
            else:
                unproven[stem] = (i, path, root)
        if unproven:
            files = {stem: view.source_file(path) for stem, (_, path, _) in unproven.items()}
            # Files of a checkout new to the store: not in the memo, and their signatures
            # go into this checkout's snapshot.
            sources = self._sources.get(list(files.values()), remember=not changed_roots)
            for stem, (i, path, root) in unproven.items():
                source = sources[files[stem]]
                if source is not None and self._unit_key(stem, source.key) == snapshot.key(i):
                    chosen[stem] = (i, path, root, source.stat, True)
                    self._snapshot_stale = True
        located = self._locate_unknown(snapshot, chosen, same_layers, published_recently)
        of_unit = Manifest.of_snapshot_unit
        manifests = {stem: of_unit(snapshot.unit(i)) for stem, (i, *_) in chosen.items()}
        # Served as recorded: the meta, and the meta_ex/err where its paths hold here.
        served = {stem for stem, (i, *_) in chosen.items()
                  if same_layers and not (moved_roots and snapshot.ex_rooted(i))}
        missing = self._missing_parts(
            {stem: m for stem, m in manifests.items() if stem not in served})
        missing |= self._missing_data([(stem, manifests[stem].data) for stem in served])
        # A unit recorded against a dependency whose file changed is chosen anew, against
        # the dependency's new unit (mypy would re-check it otherwise).
        changed = [i for i, stem in enumerate(stems) if stem not in chosen or stem in missing]
        if changed:
            keeps = self._keeps_recorded_interface(
                [stems[i] for i in changed if stems[i] not in missing], view)
            changed = [i for i in changed if stems[i] not in keeps]
        if changed:
            dependents: dict[int, list[int]] = {}
            for i in range(len(stems)):
                for dep in snapshot.deps(i):
                    dependents.setdefault(dep, []).append(i)
            while changed:
                for i in dependents.pop(changed.pop(), ()):
                    stem = stems[i]
                    if stem in chosen and stem not in missing:
                        missing.add(stem)
                        changed.append(i)
        codec = self._codec
        meta_suffix, ex_suffix = ".meta" + codec.suffix, f".{codec.ex_part}{codec.suffix}"
        data_suffix = ".data" + codec.suffix
        parts = self._image_parts
        for stem, (i, path, root, st, by_content) in chosen.items():
            if stem in missing:
                continue
            layer, seq = located[stem]
            offer = Offer(stem, path, manifests[stem], int(st.st_mtime), st.st_size, layer,
                          seq, key=snapshot.key(i))
            offers[stem] = offer
            self._from_snapshot.add(stem)
            self._stats_seen[path] = st
            if stem not in served:
                continue
            recorded_meta = snapshot.meta(i)
            meta: bytes | None = recorded_meta
            if by_content or root in moved_roots:  # another mtime, or another path
                meta = codec.patched_meta(recorded_meta, stem + data_suffix, path=path,
                                          mtime=offer.mtime, size=offer.size)
            if meta is not None:
                parts[stem + meta_suffix] = meta
                parts[stem + ex_suffix] = snapshot.ex(i)
                self._image_data.add(stem + data_suffix)
                self._image_stems.add(stem)
        self._fast_reads = not view.has_workers
        if _DEBUG:
            _debug(f"snapshot ({'here' if is_here else 'portable'}): "
                   f"{len(stems)} records, {len(unproven)} compared by content, "
                   f"{len(chosen) - len(missing)} offered, {len(served)} served as recorded")

    def _select_the_rest_of_the_snapshot(self, view: MypyView) -> None:
        """Choose units now for the snapshot's modules that were not taken from it (their
        files changed, or a dependency's did) - while mypy has read nothing yet, so that the
        records taken can still be given up: units built by another run (another version
        of the tree, a concurrent partition, a merged store or another base) may have
        recorded other interface hashes for the modules the records hold, mypy's output
        not being a function of the source alone. If the units chosen leave any edge
        disagreeing (with each other or with a record taken), every module is chosen anew
        as one set, preferring the recorded units, and the records whose unit is chosen
        again are served as recorded."""
        snapshot = self._snapshot
        if snapshot is None or not self._from_snapshot or view.parallel_worker:
            return
        rest = [stem for stem in snapshot.stems if stem not in self._offers]
        if not rest:
            return
        if not self._select_closure(rest, view):
            return
        records = {stem: offer for stem in self._from_snapshot
                   if (offer := self._offers.get(stem)) is not None}
        parts, data_names = self._image_parts, self._image_data
        served = {stem: [(name, parts[name]) for name in self._part_names(stem)
                         if name in parts] for stem in records}
        self._offers.clear()
        self._from_snapshot.clear()
        parts.clear()
        data_names.clear()
        self._image_stems.clear()
        self._snapshot_stale = True
        self._select_closure([*snapshot.stems, *self._source_stems(view)], view,
                             prefer={stem: offer.manifest.meta
                                     for stem, offer in records.items()})
        for stem, record in records.items():
            chosen = self._offers.get(stem)
            if chosen is None or chosen.previous or _parts(chosen) != _parts(record):
                continue
            self._offers[stem] = record
            self._from_snapshot.add(stem)
            if served[stem]:
                parts.update(served[stem])
                data_names.add(self._part_names(stem)[1])
                self._image_stems.add(stem)
        if _DEBUG:
            _debug(f"snapshot reconciled: {len(self._from_snapshot)} of {len(records)} "
                   f"records kept")

    def _part_names(self, stem: str) -> tuple[str, str, str]:
        """The entry names of ``stem``'s meta, data and meta_ex/err."""
        codec = self._codec
        assert codec is not None
        return (f"{stem}.meta{codec.suffix}", f"{stem}.data{codec.suffix}",
                f"{stem}.{codec.ex_part}{codec.suffix}")

    def _read_snapshot(self, view: MypyView
                       ) -> tuple[run_snapshot.Snapshot, float, bool] | None:
        """The run snapshot for this build (with the time it was recorded, and whether it is
        this checkout's), or None: this checkout's slot, else the last one written by any
        checkout (the portable slot names it). A snapshot derived from another (see
        :mod:`metastore.run_snapshot`) is read with that one, and holds only while that one
        is unchanged. Remembers what the end of the build compares with and derives from."""
        assert self.backend is not None
        here, portable = self._snapshot_keys(view)
        try:
            slots = self.backend.get_slots([here, portable])
            portable_slot = slots.get(portable)
            if portable_slot is not None and portable_slot[1].startswith(_SNAPSHOT_POINTER):
                # the portable slot names the snapshot slot of the checkout that wrote it
                pointed = portable_slot[1][len(_SNAPSHOT_POINTER):]
                portable_slot = slots.get(pointed) or self.backend.get_slot(pointed)
                portable = pointed
            for key, slot in ((here, slots.get(here)), (portable, portable_slot)):
                if slot is None:
                    continue
                self.stats.read_bytes += len(slot[1])
                base_key, base = key, slot
                derived = run_snapshot.decode_derived(slot[1])
                if derived is not None:
                    base_key = derived.base_key
                    base_slot = self.backend.get_slot(base_key)
                    if base_slot is None:
                        continue
                    base = base_slot
                    self.stats.read_bytes += len(base[1])
                snapshot = run_snapshot.decode(base[1])
                if snapshot is None or (derived is not None and not snapshot.derive(derived)):
                    continue
                # Rewritten at the end unless it is this checkout's and nothing changed.
                self._snapshot = snapshot
                self._snapshot_read = slot[1] if key == here else None
                self._snapshot_base = base_key
                return snapshot, base[0], key == here
        except StoreError as e:
            self._problem(str(e))
        return None

    def _keeps_recorded_interface(self, stems: Sequence[str], view: MypyView) -> set[str]:
        """Those of ``stems`` (records of this checkout's snapshot that were not taken) that
        mypy will see with their recorded interface hash: edited into content the store
        has no unit for, they are offered their previous unit - the recorded one (see
        :meth:`_offer_previous`) - so the records that depend on them still hold. If the
        edit changed the interface, mypy re-checks those dependents itself; a unit the
        store might hold for them against the new interface was recorded against content
        of this module the store would then have a unit for. (One lookup for all.)"""
        last = [stem for stem in stems if stem in self._last_run]
        if not last or not view.abandons_metas_of_changed_files:
            return set()
        found = self._candidates(last, view)
        return {stem for stem, entry in found.items()
                if entry is not None and not entry[2] and not entry[1].is_dir
                and entry[0] == self._last_run[stem][0]}

    def _locate_unknown(
        self, snapshot: run_snapshot.Snapshot,
        chosen: dict[str, tuple[int, str, str | None, os.stat_result, bool]],
        same_layers: bool, published_recently: bool,
    ) -> dict[str, tuple[int, int]]:
        """The layer and seq of the entry of each unit in ``chosen`` (see
        :class:`metastore.store.Entry`): as recorded if it is known in these layers, else
        looked up by key (one lookup for all; its manifest must name the recorded meta).
        A unit whose entry is gone is dropped from ``chosen``. With ``published_recently``,
        units published by the recording run are left alone: layer 0 (the same top), seq
        unknown (-1). The snapshot is rewritten when anything was looked up."""
        located: dict[str, tuple[int, int]] = {}
        named: dict[str, bytes] = {}
        for stem, (i, *_) in chosen.items():
            layer, seq = snapshot.location(i)
            if same_layers and layer >= 0:
                located[stem] = (layer, seq)
            elif same_layers and published_recently:
                located[stem] = (0, -1)
            else:
                named[stem] = snapshot.key(i)
        if not named or self.backend is None:
            return located
        self._snapshot_resolved = True
        try:
            found = self.backend.lookup(list(set(named.values())))
        except StoreError as e:
            self._problem(str(e))
            found = {}
        for stem, key in named.items():
            i = chosen[stem][0]
            meta = snapshot.text(i, 1)
            entry = next((entry for entry in found.get(key, ())
                          if (stored := Manifest.decode(entry.value)) is not None
                          and stored.meta == meta), None)
            if entry is None:
                del chosen[stem]
            else:
                located[stem] = (entry.layer, entry.seq)
        return located

    def _snapshot_slot(self) -> list[tuple[bytes, float, bytes]]:
        """The run snapshot to write at the end of the build, in both its slots ([] if
        unchanged or empty): for each module mypy asked for, the unit it was offered from
        the store or the unit published for it in this run, with the meta and meta_ex/err
        entries as served for it, and its file's stat signature if that is old enough to be
        trusted (see metastore.source_files), else with one no file has (the record is then
        proven by content)."""
        view, codec = self._view, self._codec
        if view is None or codec is None or view.parallel_worker:
            return []
        self._gather_worker_units()
        snapshot = self._snapshot
        rechecked = bool(self._published_seq or self._published_units
                         or self._worker_unpublished)
        if (self._snapshot_read is not None and snapshot is not None
                and not snapshot.untrusted and not self._snapshot_stale
                and len(self._from_snapshot) == len(snapshot)
                and self._asked <= self._from_snapshot
                and not rechecked and not self._snapshot_resolved):
            return []  # every module came from the snapshot and nothing was re-checked
        now = time.time()
        roots = view.roots()
        here, portable = self._snapshot_keys(view)
        if (snapshot is not None and self._snapshot_base != here
                and len(self._image_stems) == len(snapshot) and self._asked <= self._image_stems
                and not rechecked):
            # Every record was served as another checkout's snapshot recorded it: derive.
            derived = run_snapshot.encode_derived(
                self._snapshot_base, snapshot.checksum, _root_paths(roots),
                [self._trusted_signature(self._stats_seen.get(offer.path))
                 if (offer := self._offers.get(stem)) is not None else _UNTRUSTED_SIGNATURE
                 for stem in snapshot.stems])
            if derived == self._snapshot_read:
                return []
            self._snapshot_read = derived
            return [(here, now, derived), (portable, now, _SNAPSHOT_POINTER + here)]
        records = []
        meta_suffix, ex_part = ".meta" + codec.suffix, codec.ex_part
        ex_suffix = f".{ex_part}{codec.suffix}"
        index = self._snapshot_index()
        stems = snapshot.stems if snapshot is not None else []
        offers, stats_seen = self._offers, self._stats_seen
        Record, tokenize = run_snapshot.Record, roots.tokenize
        for stem in self._asked:
            published = self._published_units.get(stem)
            offer = offers.get(stem)
            if published is not None:
                key, m, path = published.key, published.manifest, published.path
                layer, seq, trusted = -1, -1, published.signature
                offer = Offer(stem, path, m, published.mtime, published.size)
            elif (offer is not None and not offer.previous and offer.layer >= 0
                    and offer.key and stem not in self._published_seq
                    and stem not in self._worker_unpublished):
                m, path, layer, seq, key = (offer.manifest, offer.path, offer.layer, offer.seq,
                                            offer.key)
                if seq < 0:
                    layer = -1  # still to be looked up by key (see _locate_unknown)
                st = stats_seen.get(path)
                if st is None:
                    known = self._sources.known(view.source_file(path))
                    st = known.stat if known is not None else None
                trusted = self._trusted_signature(st)
            else:
                continue
            meta = self._served_part(offer, "meta", stem + meta_suffix)
            ex = self._served_part(offer, ex_part, stem + ex_suffix)
            if meta is None or ex is None:
                continue  # not servable as recorded: chosen anew next time
            i = index.get(stem) if published is None and stem in self._from_snapshot else None
            if i is not None and snapshot is not None:
                deps = tuple(map(stems.__getitem__, snapshot.deps(i)))
                ex_rooted = snapshot.ex_rooted(i)
                module = snapshot.modules[i]
            else:
                deps = tuple(dep_stem for dep, _ in m.deps
                             if (dep_stem := self._stem_of(dep, view)) is not None)
                stored_ex = self._blob(m.ex)
                if stored_ex is None:
                    continue
                ex_rooted = roots.may_hold_tokens(stored_ex)
                module = module_id(stem)
            records.append(Record(
                stem, tokenize(path), trusted, layer, seq, key.hex(),
                m.snapshot_unit(), deps, meta, ex, ex_rooted, module))
        data = run_snapshot.encode(_root_paths(roots), self._layers_identity(), records,
                                   options=view.options_fingerprint())
        if not records or data == self._snapshot_read:
            return []
        self._snapshot_read = data
        return [(here, now, data), (portable, now, _SNAPSHOT_POINTER + here)]

    def _trusted_signature(self, st: os.stat_result | None) -> tuple[int, int, int, int]:
        """The signature a snapshot records for a file of this stat: its own, or - for a file
        changed within the timestamp granularity, which could keep its signature - one no
        file has (the record can then only be proven by content, as in another checkout).
        Every stat of this run was taken after it started."""
        if st is None or not old_enough(st, self._started):
            return _UNTRUSTED_SIGNATURE
        return signature(st)

    def _snapshot_index(self) -> dict[str, int]:
        """Record index by stem in the snapshot read at the start of the build."""
        if self._snapshot_stem_index is None:
            stems = self._snapshot.stems if self._snapshot is not None else []
            self._snapshot_stem_index = {stem: i for i, stem in enumerate(stems)}
        return self._snapshot_stem_index

    def _previous_key(self, stem: str, path: str) -> bytes:
        """The slot holding the last unit published for ``stem`` from the file at ``path``
        (the file mypy read, see :meth:`MypyView.source_file`; made absolute: this
        checkout's previous version, as in mypy's own cache directory - another project's
        module of the same name would only look like an interface change)."""
        where = os.path.abspath(path).encode("utf-8", "surrogateescape")
        return digest(self._ns + b"\0previous\0" + stem.encode() + b"\0" + where)

    def _missing_parts(self, choice: Mapping[str, Manifest]) -> set[str]:
        """Stems of ``choice`` whose unit cannot be offered, having fetched the metas and
        meta_ex/err of all of them into the blob cache in one query (mypy reads them next):
        a meta or meta_ex/err blob that is not there, or a data blob not in the store - or
        damaged: the store checks digests as it reads (the top always, bases with
        ``verify_bases``), so the fetch drops a damaged meta or meta_ex/err and
        ``intact_blobs`` reads and checks each data blob now, before mypy can accept the
        meta (it would crash on a tree it cannot load). Costs one read of the data blobs
        per run (measured in README)."""
        self._prefetch([part for m in choice.values() for part in (m.meta, m.ex)])
        missing = {stem for stem, m in choice.items()
                   if m.meta not in self._blob_cache or m.ex not in self._blob_cache}
        return missing | self._missing_data([(stem, m.data) for stem, m in choice.items()
                                             if stem not in missing])

    def _missing_data(self, data: Sequence[tuple[str, str]]) -> set[str]:
        """Stems among ``data`` ((stem, data blob digest) pairs) whose data blob is not in the
        store or damaged (read and checked now: see :meth:`_missing_parts`)."""
        if not data or self.backend is None:
            return set()
        try:
            present = self.backend.intact_blobs(sorted({bytes.fromhex(d) for _, d in data}))
        except StoreError as e:
            self._problem(str(e))
            return {stem for stem, _ in data}
        have = {d.hex() for d in present}
        return {stem for stem, d in data if d not in have}

    def _stem_of(self, module: str, view: MypyView) -> str | None:
        """The entry stem of ``module`` in this run, or None if mypy has not found it yet."""
        if module not in self._stems:
            path = self._module_path(module, view)
            if path is None:
                return None
            self._stems[module] = stem_for(module, path)
        return self._stems[module]

    def _module_path(self, module: str, view: MypyView) -> str | None:
        """:meth:`MypyView.module_path`, memoised once found (a module not found is not
        memoised: mypy may find it later in the build)."""
        path = self._paths.get(module)
        if path is None:
            path = view.module_path(module)
            if path is not None:
                self._paths[module] = path
        return path

    def _candidates(
        self, stems: Sequence[str], view: MypyView
    ) -> dict[str, _Found]:
        """For each stem: (path mypy uses, its source, usable candidates as (layer, seq,
        manifest)), or None. One store lookup for all of them.

        Usable: stored for this very source, path and roots, and for the options mypy
        will compare (so mypy would not throw it away before looking at dependencies).
        """
        result: dict[str, _Found] = dict.fromkeys(stems)
        paths: dict[str, str] = {}
        memo = self._candidates_memo
        for stem in stems:
            known = memo.get(stem)
            if known is not None:  # a copy: selection prunes the list
                result[stem] = (known[0], known[1], list(known[2]))
                continue
            module = module_id(stem)
            path = self._module_path(module, view)
            if path is not None and stem_for(module, path) == stem:
                paths[stem] = path
        files = {path: view.source_file(path) for path in paths.values()}
        sources = self._sources.get(list(files.values()))
        keys: dict[str, bytes] = {}
        for stem, path in paths.items():
            source = sources[files[path]]
            if source is not None:
                keys[stem] = self._unit_key(stem, source.key)
                result[stem] = (path, source, [])
        if not keys or self.backend is None:
            return result
        try:
            found = self.backend.lookup(list(keys.values()))
        except StoreError as e:
            self._problem(str(e))
            return dict.fromkeys(stems)
        roots = view.roots()
        fingerprint = roots.fingerprint()
        for stem, key in keys.items():
            entry = result[stem]
            assert entry is not None
            path, _, usable = entry
            module = module_id(stem)
            for stored in found.get(key, ()):
                manifest = Manifest.decode(stored.value)
                if manifest is not None and self._usable(manifest, module, path, view, roots,
                                                         fingerprint):
                    usable.append((stored.layer, stored.seq, manifest))
            memo[stem] = (path, entry[1], list(usable))
        return result

    @staticmethod
    def _usable(manifest: Manifest, module: str, path: str, view: MypyView, roots: Roots,
                fingerprint: str) -> bool:
        """True if mypy would look at ``manifest``'s unit for ``module`` at ``path`` in this
        build: stored for this path and roots, and for the options mypy compares."""
        if manifest.ex_part not in ("meta_ex", "err"):
            return False
        if manifest.bound and manifest.bound != fingerprint:
            return False
        if roots.resolve(manifest.path) != path:
            return False
        options = view.options_key(module)
        if options is not None and manifest.options != options:
            return False
        return manifest.local_partial_types or manifest.is_parallel == view.has_workers

    def _memo_slots(self, keys: Sequence[bytes]) -> dict[bytes, tuple[float, bytes]]:
        if self.backend is None:
            return {}
        return self.backend.get_slots(keys)

    def _unit_key(self, stem: str, source_key: bytes) -> bytes:
        return digest(self._ns + b"\0unit\0" + stem.encode() + b"\0" + source_key)

    # -- publishing ----------------------------------------------------------------------

    def _commit(self, *, force: bool) -> None:
        try:
            view = self._view
            now = time.monotonic()
            if (force or view is None or view.parallel_worker
                    or now - self._last_publish >= PUBLISH_INTERVAL_S):
                self._last_publish = now
                self._publish()
        finally:
            if self._session is not None and self._view is not None:
                self._share_with_session()

    def _publish(self) -> None:
        self._account_fast_reads()
        assembled = {stem: unit for stem in sorted(self._dirty)
                     if (unit := self._assemble(stem)) is not None}
        units = list(assembled.values())
        now = time.time()
        # Each published unit becomes its module's previous unit (named by key and meta).
        previous = [(self._previous_key(stem, source.path), now, key + bytes.fromhex(m.meta))
                    for stem, (key, m, _, _, source, _) in assembled.items()]
        self._dirty.clear()
        memo = self._sources.pending()
        # The snapshot, written in the same transaction, records these units too; a worker
        # tells the coordinator, which writes the snapshot.
        view = self._view
        scratch = self._session_scratch() if view is not None and view.parallel_worker \
            else None
        for stem, (key, manifest, _, parts, source, path) in assembled.items():
            published = _Published(key, manifest, path, source.mtime, source.size,
                                   self._trusted_signature(source.stat))
            self._published_units[stem] = published
            if scratch is not None:
                scratch.put("u:" + stem, published.encode())
            # What the snapshot serves for it next time is made from these.
            self._blob_cache[manifest.meta] = parts[0]
            self._blob_cache[manifest.ex] = parts[2]
        snapshot = self._snapshot_slot() if self._final else []
        if (not units and not self._unpublished_slots and not self._counter_deltas
                and not memo and not self._used and not snapshot):
            return
        if self.backend is None or not self._publishing:
            return
        entries = [(self._label, key, manifest.encode(), refs)
                   for key, manifest, refs, _, _, _ in units]
        blobs = [blob for _, _, _, parts, _, _ in units for blob in parts]
        slots = [(self._slot_key(name), mtime, data)
                 for name, (mtime, data) in self._slot_writes.items()
                 if name in self._unpublished_slots]
        slots += memo + previous + snapshot
        counters = dict(self._counter_deltas)
        counters["published"] = counters.get("published", 0) + len(units)
        try:
            written = self.backend.put(entries=entries, blobs=blobs, slots=slots,
                                       counters=counters, used=sorted(self._used))
        except StoreError as e:
            self._problem(f"{e}; this run's results were not saved")
            self._publishing = False
            return
        self.stats.published += len(units)
        self.stats.written_bytes += written
        self._counter_deltas.clear()
        self._unpublished_slots.clear()
        self._used.clear()

    def _assemble(
        self, stem: str
    ) -> tuple[bytes, Manifest, list[bytes], list[bytes], SourceFile, str] | None:
        """A verified, normalised unit for ``stem`` from this run's writes (key, manifest,
        refs, blobs, the source file it was checked against, the path mypy used), or
        None."""
        view, codec = self._view_or_none(), self._codec
        if view is None or codec is None:
            return None
        suffix = codec.suffix
        meta_name = f"{stem}.meta{suffix}"
        data_name = f"{stem}.data{suffix}"
        ex_part = codec.ex_part
        ex_name = f"{stem}.{ex_part}{suffix}"
        meta_seq = self._write_seq.get(meta_name)
        ex_seq = self._write_seq.get(ex_name)
        if meta_seq is None or ex_seq is None or ex_seq < meta_seq:
            return None  # a touch, or a unit still being written
        if self._published_seq.get(stem, -1) >= ex_seq:
            return None
        self._published_seq[stem] = ex_seq
        self.stats.rechecked += 1
        meta = codec.read_meta(self._written[meta_name], data_name)
        if meta is None:
            return None
        info = codec.meta_info(meta)
        if stem_for(info.id, info.path) != stem:
            return None
        data = self._written.get(data_name)
        if data is None:
            offer = self._offers.get(stem)
            if offer is None or offer.path != info.path:
                return None
            data = self._unit_part(offer, "data", data_name)
            if data is None:
                return None
        if not _data_matches_interface(data, meta, info.interface_hash):
            return None
        try:
            source = SourceFile(view.source_file(info.path), with_sha1=True)
        except OSError:
            return None
        if source.sha1 != info.hash:
            return None  # the file changed while mypy ran: publish nothing stale
        ex = self._written[ex_name]
        if codec.has_import_context(ex_part, ex):
            return None
        deps = list(info.deps)
        if ex_part == "meta_ex":
            meta_ex = codec.read_meta_ex(ex)
            if meta_ex is None:
                return None
            deps += codec.meta_ex_deps(meta_ex)
        roots = view.roots()
        token = roots.tokenize(info.path)
        stored_data = data if token == info.path else codec.replace_data_path(
            data, info.path, token)
        stored_ex = codec.map_error_files(ex_part, ex, roots.tokenize)
        stored_meta = codec.patched_meta(
            self._written[meta_name], data_name, path=token, mtime=0,
            data_mtime=int(DATA_MTIME))
        if stored_data is None or stored_ex is None or stored_meta is None:
            return None
        parts = [stored_meta, stored_data, stored_ex]
        bound = roots.fingerprint() if roots.mentions_any(parts) else ""
        manifest = Manifest(
            path=token, bound=bound, meta=digest(stored_meta).hex(),
            data=digest(stored_data).hex(), ex=digest(stored_ex).hex(), ex_part=ex_part,
            interface_hash=info.interface_hash, deps=tuple(deps),
            options=options_key(info.options),
            local_partial_types=bool(info.options.get("local_partial_types", True)),
            is_parallel=bool(info.options.get("is_parallel", False)),
        )
        refs = [bytes.fromhex(manifest.meta), bytes.fromhex(manifest.data),
                bytes.fromhex(manifest.ex)]
        return self._unit_key(stem, source.key), manifest, refs, parts, source, info.path

    # -- sessions (parallel workers) ------------------------------------------------------

    def _session_scratch(self) -> Scratch | None:
        if self._scratch is not None or self._session is None:
            return self._scratch
        view = self._view
        if view is None or not (view.has_workers or view.parallel_worker):
            return None
        try:
            from metastore.scratch import ScratchPad

            self._scratch = ScratchPad(self._session.path)
        except Exception as e:  # the scratch pad is on local temp storage
            self._problem(f"cannot open the session scratch pad {self._session.path}: {e}")
            self._session = None
        return self._scratch

    def _share_with_session(self) -> None:
        """Coordinator: pin the units offered so far; worker: share its run statistics."""
        view = self._view
        scratch = self._session_scratch()
        if scratch is None or view is None:
            return
        if view.parallel_worker:
            scratch.put(f"s:{os.getpid()}", json.dumps(self.stats.as_dict()).encode())
        else:
            for stem, offer in self._offers.items():
                if stem in self._pinned:
                    continue
                self._pinned.add(stem)
                pin = None if offer is None else {
                    "v": offer.manifest.encode().decode(), "path": offer.path,
                    "mtime": offer.mtime, "size": offer.size, "previous": offer.previous}
                scratch.put("p:" + stem, json.dumps(pin).encode())
            if _DEBUG:
                _debug(f"pinned {len(self._pinned)} stems")
        scratch.commit()

    def _pinned_offer(self, stem: str) -> tuple[bool, Offer | None]:
        """Worker: (True, the coordinator's choice) if it pinned one for ``stem``."""
        view = self._view
        if view is None or not view.parallel_worker:
            return False, None
        scratch = self._session_scratch()
        raw = None if scratch is None else scratch.get("p:" + stem)
        if _DEBUG:
            _debug(f"pin {stem} scratch={scratch is not None} -> {raw is not None}")
        if raw is None:
            return False, None
        pin = json.loads(raw)
        manifest = None if pin is None else Manifest.decode(pin["v"].encode())
        if manifest is None:
            return True, None
        return True, Offer(stem, pin["path"], manifest, int(pin["mtime"]), int(pin["size"]),
                           previous=bool(pin.get("previous", False)))

    def _gather_worker_units(self) -> None:
        """Coordinator, at the end of a parallel build: the units the workers published (into
        :attr:`_published_units`), and the stems they re-checked without publishing a unit
        (into :attr:`_worker_unpublished`): what the run snapshot records for them."""
        view = self._view
        if view is None or view.parallel_worker or not view.has_workers:
            return
        scratch = self._session_scratch()
        if scratch is None:
            return
        try:
            items = scratch.items("u:")
        except StoreError as e:
            self._problem(str(e))
            return
        for name, value in items:
            stem = name[2:]
            published = _Published.decode(value) if value else None
            if published is None:
                self._worker_unpublished.add(stem)
            else:
                self._published_units[stem] = published

    def _gather_worker_stats(self) -> None:
        assert self._scratch is not None
        for _, pid_stats in self._scratch.items("s:"):
            self.stats.add(json.loads(pid_stats))

    # -- helpers -------------------------------------------------------------------------

    def _view_or_none(self, partial: bool = False) -> MypyView | None:
        """The view of mypy's build; with ``partial``, also while mypy is still setting up.

        mypy's ``BuildManager`` is located once (see :func:`find_manager`) and kept.
        """
        if self._view is not None:
            return self._view
        if self._view_failed:
            return None
        if self._manager is None:
            self._manager = self._locate()
            if self._manager is None:
                self._view_failed = True
                self._problem(
                    "could not find mypy's build state; the store is not used in this run")
                return None
        view = MypyView(self._manager)
        if partial:
            return view  # during BuildManager.__init__: only the plugins snapshot is ready
        try:
            self._ns, self._label = view.namespace()
        except Exception as e:
            self._problem(f"could not read mypy's options ({e!r}); the store is not used")
            self._view_failed = True
            return None
        self._codec = Codec(view.fixed_format)
        self._view = view
        return view

    def _view_is_worker(self) -> bool:
        return self._view is not None and self._view.parallel_worker

    def _bump(self, counter: str) -> None:
        self._counter_deltas[counter] = self._counter_deltas.get(counter, 0) + 1

    def _problem(self, message: str) -> None:
        if message not in self.stats.problems:
            self.stats.problems.append(message)
            self._report(message)


def _parts(offer: Offer) -> tuple[str, str, str]:
    """The blob digests of ``offer``'s unit: what makes two offers the same unit."""
    return offer.manifest.meta, offer.manifest.data, offer.manifest.ex


class _Published(NamedTuple):
    """A unit published in this build, as the run snapshot records it."""

    key: bytes
    manifest: Manifest
    path: str  # the path mypy used
    mtime: int  # of the source file it was checked against
    size: int
    signature: tuple[int, int, int, int]  # that file's, if trusted (see _trusted_signature)

    def encode(self) -> bytes:
        return json.dumps([self.key.hex(), self.manifest.encode().decode(), self.path,
                           self.mtime, self.size, list(self.signature)]).encode()

    @classmethod
    def decode(cls, value: bytes) -> _Published | None:
        try:
            key, manifest, path, mtime, size, sig = json.loads(value)
            decoded = Manifest.decode(manifest.encode())
            if decoded is None or len(sig) != 4:
                return None
            return cls(bytes.fromhex(key), decoded, str(path), int(mtime), int(size),
                       (int(sig[0]), int(sig[1]), int(sig[2]), int(sig[3])))
        except (ValueError, TypeError):
            return None


def _root_paths(roots: Roots) -> dict[str, str]:
    """What a run snapshot records of where it was made (and is compared with): each root's
    path, and the current directory (under ".") for the relative paths mypy uses."""
    return {**roots.paths_by_name(), ".": os.getcwd()}


def _data_matches_interface(data: bytes, meta: Any, interface_hash: str) -> bool:
    """mypy's interface hash: sha1 of the data entry plus the JSON of the plugin data."""
    from mypy.util import hash_digest_bytes, json_dumps

    try:
        computed = hash_digest_bytes(data + json_dumps(meta.plugin_data))
    except Exception:
        return False
    value = computed.hex() if isinstance(computed, bytes) else str(computed)
    return value == interface_hash


_DEBUG = os.environ.get("MYPY_METASTORE_DEBUG_LOG", "")


def _debug(message: str) -> None:
    """Append a line to the file named by ``MYPY_METASTORE_DEBUG_LOG`` (developers only)."""
    with open(_DEBUG, "a") as f:
        f.write(f"{os.getpid()} {message}\n")


__all__ = ["MypyStore", "RunStats", "Manifest", "PLUGINS_SNAPSHOT"]
