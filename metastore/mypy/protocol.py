"""mypy's metadata-store protocol, implemented on a content-addressed store.

mypy names its entries after modules (``pkg/mod.meta.ff``, ``pkg/mod.data.ff``,
``pkg/mod.meta_ex.ff``; 1.20: ``pkg/mod.err.ff``). This module maps those names onto
*units* stored under a content key:

    key = digest(namespace, stem, blake3(source bytes))

where the namespace separates what mypy treats as globally incompatible (see
:meth:`MypyView.namespace`). A unit bundles the meta, the data and the meta_ex/err entry
of one module, published together or not at all, and never changed afterwards. Many
units may exist for one key (the same source checked against different dependencies or
options); the units are chosen as one consistent set (see :mod:`metastore.mypy.selection`).

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

import time

from metastore.mypy.cache_codec import DATA_MTIME, plugins_snapshot_bytes
from metastore.mypy.debug import DEBUG, debug
from metastore.mypy.publishing import Publishing
from metastore.mypy.state import PLUGINS_SNAPSHOT, UNIT_NAME
from metastore.mypy.stats import RunStats
from metastore.mypy.units import Manifest, Offer


class MypyStore(Publishing):
    """One process's view of the store during one mypy build: mypy's metadata-store
    protocol (see the module docstring; the parts it is made of are in the modules of its
    base classes)."""

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
            match = UNIT_NAME.match(name)
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
            match = UNIT_NAME.match(name)
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

    def _read(self, name: str, probe: bool = False) -> bytes | None:
        result = self._read_inner(name, probe)
        if DEBUG:
            debug(f"read {name} probe={probe} -> {None if result is None else len(result)}")
        return result

    def _read_inner(self, name: str, probe: bool = False) -> bytes | None:
        if name == PLUGINS_SNAPSHOT:
            view = self._view_or_none(partial=True)
            if view is None:
                return None
            return plugins_snapshot_bytes(view.plugins_snapshot())
        match = UNIT_NAME.match(name)
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


__all__ = ["MypyStore", "RunStats", "Manifest", "PLUGINS_SNAPSHOT"]
