"""The state of one process's use of the store during one mypy build, and the helpers every
part of :class:`metastore.mypy.protocol.MypyStore` uses."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from metastore.mypy import run_snapshot
from metastore.mypy.cache_codec import Codec
from metastore.mypy.slot_kinds import SOURCE_MEMO
from metastore.mypy.source_files import SourceKeys
from metastore.mypy.stats import RunStats
from metastore.mypy.units import Candidates, Offer, Published, stem_for
from metastore.mypy.view import MypyView
from metastore.store.api import TOUCH_GRAIN_S, Entry, StoreError, digest
from metastore.store.api import now as clock

if TYPE_CHECKING:  # Protocol classes cost time to create; only the type checker needs them.
    class Backend(Protocol):
        """The part of :class:`metastore.store.local.Store` this layer uses."""

        def lookup(self, keys: Sequence[bytes]) -> dict[bytes, list[Entry]]: ...
        def get_blob(self, digest: bytes) -> bytes | None: ...
        def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]: ...
        def get_slot(self, key: bytes) -> tuple[float, bytes] | None: ...
        def get_slots(self, keys: Sequence[bytes], *, kind: str = ...
                      ) -> dict[bytes, tuple[float, bytes]]: ...
        def intact_blobs(self, digests: Sequence[bytes]) -> set[bytes]: ...
        @property
        def base_paths(self) -> tuple[str, ...]: ...
        def put(
            self,
            *,
            entries: Sequence[tuple[str, bytes, bytes, Sequence[bytes]]] = ...,
            blobs: Iterable[bytes] = ...,
            slots: Sequence[tuple[bytes, float, bytes, str]] = ...,
            counters: Mapping[str, int] = ...,
            used: Iterable[tuple[int, int]] = ...,
            used_slots: Iterable[bytes] = ...,
        ) -> int: ...

    class Scratch(Protocol):
        """The part of :class:`metastore.store.scratch.ScratchPad` this layer uses."""

        def get(self, name: str) -> bytes | None: ...
        def put(self, name: str, data: bytes) -> None: ...
        def commit(self) -> None: ...
        def close(self) -> None: ...
        def items(self, prefix: str) -> list[tuple[str, bytes]]: ...

    class Ahead(Protocol):
        """A helper checking data blobs ahead of the build (metastore.mypy.checked_ahead)."""

        #: The slot of the hint this command reads and writes, and the place
        #: (checked_ahead.place) of the directory it runs in.
        hint_key: bytes
        place: bytes

        def answer(self, wait_s: float
                   ) -> tuple[bytes | None, bytes | None, frozenset[bytes]] | None:
            """(the hint as read, the checksum of the snapshot checked, its data digests
            not found intact), None for what the helper did not find; None if it gave no
            answer. The first call waits at most ``wait_s`` seconds for the helper (then
            the answer is kept); never raises."""

    class Session(Protocol):
        """The processes of one build (see :class:`metastore.seams.session.Session`)."""

        path: str  # of the build's scratch pad
        is_coordinator: bool

        def remove(self) -> None: ...


PLUGINS_SNAPSHOT = "@plugins_snapshot.json"
# Module entries; names starting with "@" are mypy's global entries (@plugins_snapshot.json,
# and for --cache-fine-grained @deps.meta.json and @root.deps.json), kept in slots.
UNIT_NAME = re.compile(
    r"^(?P<stem>[^@].*)\.(?P<part>meta|data|meta_ex|err)\.(?P<fmt>ff|json)$")
#: How often a coordinator (or serial) process publishes while mypy runs (see commit()).
PUBLISH_INTERVAL_S = 1.0


class StoreState:
    """What one process knows during one mypy build, shared by the parts of
    :class:`metastore.mypy.protocol.MypyStore` (each a class of its own module, stacked:
    workers, reading, choosing, snapshots, publishing, the protocol), and the small helpers
    they all use. Holds no logic of its own beyond those helpers.

    ``locate`` returns mypy's ``BuildManager`` for this build (or None if it cannot be
    found, in which case nothing is offered and nothing is published). ``session`` is the
    build's processes (parallel workers) and ``open_scratch`` opens their scratch pad; both
    None for a build without workers.
    """

    def __init__(
        self,
        backend: Backend | None,
        locate: Callable[[], Any | None],
        *,
        store_path: str,
        report: Callable[[str], None],
        session: Session | None = None,
        open_scratch: Callable[[str], Scratch] | None = None,
        ahead: Ahead | None = None,
    ) -> None:
        self.backend = backend
        #: A helper checking the data blobs of this command's last snapshot ahead of the
        #: build (see metastore.mypy.checked_ahead), if one was started.
        self._ahead = ahead
        self._intact_ahead_memo: set[str] | None = None
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
        # The run snapshot (see metastore.mypy.run_snapshot): read at the first offer, written
        # at the end of the build if it changed.
        self._snapshot_tried = False
        self._snapshot: run_snapshot.Snapshot | None = None  # the snapshot read
        # its bytes (a full snapshot or a delta), if it is this checkout's
        self._snapshot_read: bytes | None = None
        self._snapshot_keys_memo: tuple[bytes, bytes] | None = None
        self._snapshot_stem_index: dict[str, int] | None = None
        self._snapshot_base = b""  # the slot of the (full) snapshot read
        # stem -> (path, record index) of the units this checkout's last run had, for
        # modules mypy resolves the same: each is that module's previous unit (see
        # _offer_previous).
        self._last_run: dict[str, tuple[str, int]] = {}
        self._from_snapshot: set[str] = set()  # stems offered from it
        self._as_recorded: set[str] = set()  # of those, served exactly as recorded
        self._snapshot_resolved = False  # entries of units it named by key were looked up
        self._snapshot_stale = False  # some record was taken by content: write it anew
        # Entries served as the snapshot recorded them (name -> bytes), the data entries of
        # their units, and the names mypy read through the fast path of read().
        self._image_parts: dict[str, bytes] = {}
        self._image_data: set[str] = set()
        self._image_stems: set[str] = set()
        self._fast_reads = False  # read()/getmtime() answer from those first (no workers)
        self._fast_taken: list[str] = []
        #: Mark the units served as recorded used (see _account_fast_reads).
        self._touch_served = True
        # stem -> the unit published for it in this build (by this process, or - in the
        # coordinator, gathered at the end - by a parallel worker)
        self._published_units: dict[str, Published] = {}
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
        self._candidates_memo: dict[str, Candidates] = {}
        self._blob_cache: dict[str, bytes] = {}
        self._publishing = backend is not None
        self._pinned: set[str] = set()
        self._counter_deltas: dict[str, int] = {}
        self._used: set[tuple[int, int]] = set()  # (layer, seq) of units offered, for the store
        self._used_slots: set[bytes] = set()  # slots read and used, touched at the next put
        self._session = session
        self._open_scratch = open_scratch
        self._scratch: Scratch | None = None

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
        key = self._slot_key(name)
        try:
            slot = self.backend.get_slot(key)
        except StoreError as e:
            self._problem(str(e))
            return None
        if slot is not None:
            self._used_slots.add(key)  # mypy's own: written with the time mypy gives
        return slot

    def _slot_key(self, name: str) -> bytes:
        return digest(self._ns + b"\0slot\0" + name.encode())

    def _unit_key(self, stem: str, source_key: bytes) -> bytes:
        return digest(self._ns + b"\0unit\0" + stem.encode() + b"\0" + source_key)

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

    def _memo_slots(self, keys: Sequence[bytes]) -> dict[bytes, tuple[float, bytes]]:
        if self.backend is None:
            return {}
        found = self.backend.get_slots(keys, kind=SOURCE_MEMO)
        self._touch_slots(found)
        return found

    def _touch_slots(self, found: Mapping[bytes, tuple[float, bytes]]) -> None:
        """Mark slots read (and about to be used) as used, so that they stay in the store's
        LRU with the entries. Those written less than TOUCH_GRAIN_S ago are skipped: their
        last use is no older than that (the store also writes a last use at most once per
        grain)."""
        stale = clock() - TOUCH_GRAIN_S
        self._used_slots.update(key for key, (written, _) in found.items() if written < stale)

    def _previous_key(self, stem: str, path: str) -> bytes:
        """The slot holding the last unit published for ``stem`` from the file at ``path``
        (the file mypy read, see :meth:`MypyView.source_file`; made absolute: this
        checkout's previous version, as in mypy's own cache directory - another project's
        module of the same name would only look like an interface change)."""
        where = os.path.abspath(path).encode("utf-8", "surrogateescape")
        return digest(self._ns + b"\0previous\0" + stem.encode() + b"\0" + where)

    def _session_scratch(self) -> Scratch | None:
        if self._scratch is not None or self._session is None:
            return self._scratch
        view = self._view
        if view is None or not (view.has_workers or view.parallel_worker):
            return None
        if self._open_scratch is None:
            return None
        try:
            self._scratch = self._open_scratch(self._session.path)
        except Exception as e:  # the scratch pad is on local temp storage
            self._problem(f"cannot open the session scratch pad {self._session.path}: {e}")
            self._session = None
        return self._scratch
