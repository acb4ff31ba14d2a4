"""Serving a chosen unit's entries to mypy: the meta patched for the file on disk, paths
resolved against this run's roots; counting what was offered; checking that a unit's blobs
are there and intact before it is offered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from metastore.mypy.debug import DEBUG, debug
from metastore.mypy.units import Manifest, Offer
from metastore.mypy.workers import Workers
from metastore.store.api import StoreError


#: About what checking one data blob costs the build (read, hash; measured at 10,000).
CHECK_S_PER_BLOB = 10e-6


class Reading(Workers):
    """Entries of offered units, as mypy is given them."""

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

    def _count_offered(self, offers: Sequence[Offer], *, touch: bool = True) -> None:
        """Count metas of ``offers`` read by mypy as offered (by layer), and (with
        ``touch``) their units as used."""
        deltas = self._counter_deltas
        deltas["offered"] = deltas.get("offered", 0) + len(offers)
        self.stats.offered += len(offers)
        by_layer = Counter(offer.layer for offer in offers)
        for layer, count in by_layer.items():
            if layer >= 0:
                self.stats.hit(layer, count)
                name = "hits_top" if layer == 0 else "hits_base"
                deltas[name] = deltas.get(name, 0) + count
        if touch:
            self._used.update((offer.layer, offer.seq) for offer in offers
                              if offer.layer >= 0 and offer.seq >= 0)

    def _account_fast_reads(self) -> None:
        """Record the metas mypy read through :meth:`read`'s fast path as the slow path
        would have: asked for, offered, their units used - unless the snapshot they were
        served from was recorded less than the last-use grain ago (its run used them)."""
        if not self._fast_taken or self._codec is None:
            return
        taken, self._fast_taken = self._fast_taken, []
        suffix = ".meta" + self._codec.suffix
        stems = [name[: -len(suffix)] for name in taken if name.endswith(suffix)]
        self._asked.update(stems)
        self._count_offered([offer for stem in stems
                             if (offer := self._offers.get(stem)) is not None],
                            touch=self._touch_served)

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
        store or damaged (read and checked now: see :meth:`_missing_parts`), except those
        a helper found intact ahead of the build (see :mod:`metastore.mypy.checked_ahead`)."""
        if not data or self.backend is None:
            return set()
        ahead = self._intact_ahead()
        rest = [(stem, d) for stem, d in data if d not in ahead]
        if DEBUG:
            debug(f"data blobs: {len(data)} to check, {len(data) - len(rest)} found intact "
                  "ahead")
        if not rest:
            return set()
        try:
            present = self.backend.intact_blobs(sorted({bytes.fromhex(d) for _, d in rest}))
        except StoreError as e:
            self._problem(str(e))
            return {stem for stem, _ in rest}
        have = {d.hex() for d in present}
        return {stem for stem, d in rest if d not in have}

    def _intact_ahead(self) -> set[str]:
        """The data digests (hex) a helper found intact ahead of the build (see
        :mod:`metastore.mypy.checked_ahead`): those of the snapshot read, if the helper
        checked that very snapshot (the same checksum), less those it did not find intact."""
        if self._intact_ahead_memo is not None:
            return self._intact_ahead_memo
        snapshot = self._snapshot
        if self._ahead is None or snapshot is None:
            return set()
        # Waiting longer than checking the blobs here would take gains nothing.
        answer = self._ahead.answer(CHECK_S_PER_BLOB * len(snapshot))
        self._intact_ahead_memo = set() if answer is None or answer[1] != snapshot.checksum \
            else snapshot.data_texts().difference(d.hex() for d in answer[2])
        return self._intact_ahead_memo
