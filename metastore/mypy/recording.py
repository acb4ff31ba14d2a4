"""Recording the run snapshot at the end of the build (see
:mod:`metastore.mypy.run_snapshot`): a full snapshot, a delta on this checkout's full one
(:mod:`metastore.mypy.snapshot_delta`), or one derived from another checkout's."""

from __future__ import annotations

import os

from metastore.mypy import run_snapshot, snapshot_delta
from metastore.mypy.debug import DEBUG, debug
from metastore.mypy.slot_kinds import (
    DERIVED_SNAPSHOT,
    RUN_SNAPSHOT,
    RUN_SNAPSHOT_DELTA,
    SNAPSHOT_POINTER_KIND,
)
from metastore.mypy.snapshots import Snapshots, root_paths
from metastore.mypy.source_files import old_enough, signature
from metastore.mypy.units import SNAPSHOT_POINTER, UNTRUSTED_SIGNATURE, Offer, module_id
from metastore.mypy.view import MypyView
from metastore.store.api import now as clock


class Recording(Snapshots):
    """The run snapshot written at the end of the build."""

    def _snapshot_slot(self) -> list[tuple[bytes, float, bytes, str]]:
        """The run snapshot to write at the end of the build, in both its slots ([] if
        unchanged or empty): for each module mypy asked for, the unit it was offered from
        the store or the unit published for it in this run, with the meta and meta_ex/err
        entries as served for it, and its file's stat signature if that is old enough to be
        trusted (see metastore.mypy.source_files), else with one no file has (the record is then
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
        now = clock()
        roots = view.roots()
        here, portable = self._snapshot_keys(view)
        if (snapshot is not None and self._snapshot_base != here
                and len(self._image_stems) == len(snapshot) and self._asked <= self._image_stems
                and not rechecked):
            # Every record was served as another checkout's snapshot recorded it: derive.
            derived = run_snapshot.encode_derived(
                self._snapshot_base, snapshot.checksum, root_paths(roots),
                [self._trusted_signature(self._stats_seen.get(offer.path))
                 if (offer := self._offers.get(stem)) is not None else UNTRUSTED_SIGNATURE
                 for stem in snapshot.stems])
            if derived == self._snapshot_read:
                return []
            self._snapshot_read = derived
            return [(here, now, derived, DERIVED_SNAPSHOT),
                    (portable, now, SNAPSHOT_POINTER + here, SNAPSHOT_POINTER_KIND)]
        delta = self._snapshot_delta(view, here, portable, now)
        if delta is not None:
            return delta
        records = [record for stem in self._asked
                   if (record := self._record_of(stem, view)) is not None]
        data = run_snapshot.encode(root_paths(roots), self._layers_identity(), records,
                                   options=view.options_fingerprint())
        if not records or data == self._snapshot_read:
            return []
        self._snapshot_read = data
        return [(here, now, data, RUN_SNAPSHOT),
                (portable, now, SNAPSHOT_POINTER + here, SNAPSHOT_POINTER_KIND)]

    def _snapshot_delta(self, view: MypyView, here: bytes, portable: bytes, now: float
                        ) -> list[tuple[bytes, float, bytes, str]] | None:
        """The delta to write into this checkout's slot (see
        :mod:`metastore.mypy.snapshot_delta`) in place of a whole new snapshot ([] if it is
        the one read), with the full snapshot it is on moved to a slot of its own if this
        is the first delta on it; None if a full snapshot is to be written: the snapshot
        read is not this checkout's, it was recorded with other roots, layers or options, a
        record of the full snapshot is left out, or the delta would be too big. Records
        served as they were recorded are not built again."""
        snapshot, roots, head = self._snapshot, view.roots(), self._snapshot_read
        if (snapshot is None or head is None or self._snapshot_base != here
                or snapshot.roots != root_paths(roots)
                or snapshot.layers != self._layers_identity()
                or snapshot.options != view.options_fingerprint()):
            if DEBUG:
                debug(f"snapshot delta: not on this checkout's snapshot "
                      f"(read here: {head is not None}, "
                      f"full here: {self._snapshot_base == here})")
            return None
        redone = self._published_units.keys() | self._published_seq.keys() \
            | self._worker_unpublished
        unchanged = (self._as_recorded & self._asked & self._from_snapshot) - redone
        index, from_delta = self._snapshot_index(), snapshot.from_delta
        records = [snapshot.record(i) for stem in unchanged if (i := index[stem]) in from_delta]
        records += [record for stem in self._asked - unchanged
                    if (record := self._record_of(stem, view)) is not None]
        kept = unchanged.union(record.stem for record in records)
        gone = sum(1 for stem in snapshot.base_stems if stem not in kept)
        if DEBUG:
            debug(f"snapshot delta: {len(records)} records, {gone} gone, "
                  f"{len(unchanged)} as recorded")
        if gone or snapshot_delta.compact(len(records), len(snapshot.base_stems)):
            return None  # a delta only adds and replaces records
        data = snapshot_delta.encode(snapshot.base_checksum, snapshot.roots, snapshot.layers,
                                     records, options=snapshot.options)
        if data == head:
            return []
        self._snapshot_read = data
        writes = [(here, now, data, RUN_SNAPSHOT_DELTA),
                  (portable, now, SNAPSHOT_POINTER + here, SNAPSHOT_POINTER_KIND)]
        if head.startswith(run_snapshot.MAGIC):  # the full snapshot moves out of the way
            writes.insert(0, (snapshot_delta.full_key(snapshot.base_checksum), now, head,
                              RUN_SNAPSHOT))
        return writes

    def _record_of(self, stem: str, view: MypyView) -> run_snapshot.Record | None:
        """What the run snapshot records for ``stem`` at the end of this build: the unit
        offered from the store or published for it in this build, with the meta and
        meta_ex/err entries as served; None if it has neither, or they cannot be served as
        recorded (it is chosen anew next time)."""
        codec, roots = self._codec, view.roots()
        assert codec is not None
        published = self._published_units.get(stem)
        offer = self._offers.get(stem)
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
            st = self._stats_seen.get(path)
            if st is None:
                known = self._sources.known(view.source_file(path))
                st = known.stat if known is not None else None
            trusted = self._trusted_signature(st)
        else:
            return None
        meta = self._served_part(offer, "meta", f"{stem}.meta{codec.suffix}")
        ex = self._served_part(offer, codec.ex_part, f"{stem}.{codec.ex_part}{codec.suffix}")
        if meta is None or ex is None:
            return None
        snapshot = self._snapshot
        i = self._snapshot_index().get(stem) if published is None \
            and stem in self._from_snapshot else None
        if i is not None and snapshot is not None:
            deps = tuple(map(snapshot.stems.__getitem__, snapshot.deps(i)))
            ex_rooted = snapshot.ex_rooted(i)
            module = snapshot.modules[i]
        else:
            deps = tuple(dep_stem for dep, _ in m.deps
                         if (dep_stem := self._stem_of(dep, view)) is not None)
            stored_ex = self._blob(m.ex)
            if stored_ex is None:
                return None
            ex_rooted = roots.may_hold_tokens(stored_ex)
            module = module_id(stem)
        return run_snapshot.Record(stem, roots.tokenize(path), trusted, layer, seq, key.hex(),
                                   m.snapshot_unit(), deps, meta, ex, ex_rooted, module)

    def _trusted_signature(self, st: os.stat_result | None) -> tuple[int, int, int, int]:
        """The signature a snapshot records for a file of this stat: its own, or - for a file
        changed within the timestamp granularity, which could keep its signature - one no
        file has (the record can then only be proven by content, as in another checkout).
        Every stat of this run was taken after it started."""
        if st is None or not old_enough(st, self._started):
            return UNTRUSTED_SIGNATURE
        return signature(st)

    def _snapshot_index(self) -> dict[str, int]:
        """Record index by stem in the snapshot read at the start of the build."""
        if self._snapshot_stem_index is None:
            stems = self._snapshot.stems if self._snapshot is not None else []
            self._snapshot_stem_index = {stem: i for i, stem in enumerate(stems)}
        return self._snapshot_stem_index
