"""Parallel workers: the coordinator pins the units it offered in the build's scratch pad,
workers take them, tell the coordinator what they published, and share their statistics."""

from __future__ import annotations

import json
import os

from metastore.mypy.debug import DEBUG, debug
from metastore.mypy.state import StoreState
from metastore.mypy.units import Manifest, Offer, Published
from metastore.store.api import StoreError


class Workers(StoreState):
    """Sharing a build's choices and results between its processes."""

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
            if DEBUG:
                debug(f"pinned {len(self._pinned)} stems")
        scratch.commit()

    def _pinned_offer(self, stem: str) -> tuple[bool, Offer | None]:
        """Worker: (True, the coordinator's choice) if it pinned one for ``stem``."""
        view = self._view
        if view is None or not view.parallel_worker:
            return False, None
        scratch = self._session_scratch()
        raw = None if scratch is None else scratch.get("p:" + stem)
        if DEBUG:
            debug(f"pin {stem} scratch={scratch is not None} -> {raw is not None}")
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
            published = Published.decode(value) if value else None
            if published is None:
                self._worker_unpublished.add(stem)
            else:
                self._published_units[stem] = published

    def _gather_worker_stats(self) -> None:
        assert self._scratch is not None
        for _, pid_stats in self._scratch.items("s:"):
            self.stats.add(json.loads(pid_stats))
