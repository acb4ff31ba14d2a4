"""The run snapshot in use: taking the last run's choice for every unchanged module (see
:mod:`metastore.mypy.run_snapshot`), choosing the rest at once (giving the records up where
they disagree); :mod:`metastore.mypy.recording` records this run's choice at the end."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from metastore.mypy import run_snapshot, snapshot_delta
from metastore.mypy.choosing import Choosing
from metastore.mypy.debug import DEBUG, debug
from metastore.mypy.paths import Roots
from metastore.mypy.source_files import signature
from metastore.mypy.units import (
    SNAPSHOT_POINTER,
    Manifest,
    Offer,
    unit_parts,
)
from metastore.mypy.view import MypyView
from metastore.store.api import TOUCH_GRAIN_S, StoreError, digest
from metastore.store.api import now as clock


class Snapshots(Choosing):
    """Units offered from, and recorded in, run snapshots."""

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
        if DEBUG:
            debug(f"snapshot keys: {common[:3]!r}, {len(sources)} sources")
        self._snapshot_keys_memo = (digest(b"\0snapshot-2\0" + b"\0".join(common + here)),
                                    digest(b"\0portable-snapshot-2\0" + b"\0".join(common)))
        return self._snapshot_keys_memo

    def _layers_identity(self) -> str:
        """What the (layer, seq) of an entry refer to: this store's layers, in order."""
        return json.dumps([self.store_path, *getattr(self.backend, "base_paths", ())])

    def _offer_from_snapshot(self, view: MypyView) -> None:
        """Offer, for every module of the last run's snapshot that is unchanged, the unit
        that run chose (see :mod:`metastore.mypy.run_snapshot`); the others are left to
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
        current = root_paths(roots)
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
        published_recently = same_layers and clock() - recorded < TOUCH_GRAIN_S
        # Likewise the entries of the units it serves as recorded: the recording run used
        # each of them (served it, or published it), so their last use is that recent.
        self._touch_served = not published_recently
        stat = view.stat
        offers, known_path = self._offers, self._paths.get
        source_path = view.source_modules().get  # the path _module_path gives a source
        isabs, last_run, recorded_signature = os.path.isabs, self._last_run, snapshot.signature
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
                path, root = token, None if isabs(token) else "."
            module = modules[i]
            if stem in offers or (source_path(module) != path and known_path(module) != path
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
                last_run[stem] = (path, i)
            if root is not None and root in changed_roots:
                unproven[stem] = (i, path, root)  # another file: by content
                continue
            st = stat(path)
            if st is None:
                continue
            if signature(st) == recorded_signature(i):
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
        parts, stats_seen = self._image_parts, self._stats_seen
        as_recorded: list[str] = []
        imaged: list[str] = []
        new = tuple.__new__  # 10,000 offers: NamedTuple's keyword-taking __new__ is slower
        taken = [(stem, *record) for stem, record in chosen.items() if stem not in missing]
        for (stem, i, path, root, st, by_content), (meta, ex, key, location) in zip(
                taken, snapshot.served([record[1] for record in taken])):
            layer, seq = located[stem]
            offers[stem] = new(Offer, (stem, path, manifests[stem], int(st.st_mtime),
                                       st.st_size, layer, seq, False, key))
            stats_seen[path] = st
            if stem not in served:
                continue
            if by_content or root in moved_roots:  # another mtime, or another path
                patched = codec.patched_meta(meta, stem + data_suffix, path=path,
                                             mtime=int(st.st_mtime), size=st.st_size)
                if patched is None:
                    continue
                meta = patched
            elif (layer if seq >= 0 else -1, seq) == location:
                as_recorded.append(stem)  # its record holds as it is (see _record_of)
            parts[stem + meta_suffix] = meta
            parts[stem + ex_suffix] = ex
            imaged.append(stem)
        self._from_snapshot.update(stem for stem, *_ in taken)
        self._as_recorded.update(as_recorded)
        self._image_stems.update(imaged)
        self._image_data.update([stem + data_suffix for stem in imaged])
        self._fast_reads = not view.has_workers
        if DEBUG:
            debug(f"snapshot ({'here' if is_here else 'portable'}): "
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
            if chosen is None or chosen.previous or unit_parts(chosen) != unit_parts(record):
                continue
            self._offers[stem] = record
            self._from_snapshot.add(stem)
            if served[stem]:
                parts.update(served[stem])
                data_names.add(self._part_names(stem)[1])
                self._image_stems.add(stem)
        self._as_recorded &= self._from_snapshot  # the records kept, served as before
        if DEBUG:
            debug(f"snapshot reconciled: {len(self._from_snapshot)} of {len(records)} "
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
        checkout (the portable slot names it); a delta is read with the full snapshot it is
        on (see :mod:`metastore.mypy.snapshot_delta`). A snapshot derived from another (see
        :mod:`metastore.mypy.run_snapshot`) is read with that one, and holds only while that one
        is unchanged. Remembers what the end of the build compares with and derives from."""
        assert self.backend is not None
        here, portable = self._snapshot_keys(view)
        try:
            slots = self.backend.get_slots([here, portable])
            portable_slot = slots.get(portable)
            pointer = portable_slot
            if portable_slot is not None and portable_slot[1].startswith(SNAPSHOT_POINTER):
                # the portable slot names the snapshot slot of the checkout that wrote it
                pointed = portable_slot[1][len(SNAPSHOT_POINTER):]
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
                # Taken: its slots stay in the store's LRU (see _touch_slots).
                taken = {key: slot, base_key: base}
                snapshot = self._decode_snapshot(base[1], taken)
                if snapshot is None or (derived is not None and not snapshot.derive(derived)):
                    continue
                # Rewritten at the end unless it is this checkout's and nothing changed.
                self._snapshot = snapshot
                self._snapshot_read = slot[1] if key == here else None
                self._snapshot_base = base_key
                if key == portable and pointer is not None:
                    taken[self._snapshot_keys(view)[1]] = pointer
                self._touch_slots(taken)
                return snapshot, base[0], key == here
        except StoreError as e:
            self._problem(str(e))
        return None

    def _decode_snapshot(self, data: bytes, taken: dict[bytes, tuple[float, bytes]]
                         ) -> run_snapshot.Snapshot | None:
        """The snapshot in ``data``: a full one, or a delta with the full snapshot it is on
        (read now, and added to ``taken``); None if it is neither, or that one is gone."""
        backend = self.backend
        if backend is None:
            return None
        found = snapshot_delta.decode_any(data, backend.get_slot)
        if found is None:
            return None
        snapshot, base = found
        if base is not None:
            self.stats.read_bytes += len(base[1][1])
            taken[base[0]] = base[1]
        return snapshot

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
        :class:`metastore.store.api.Entry`): as recorded if it is known in these layers, else
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

def root_paths(roots: Roots) -> dict[str, str]:
    """What a run snapshot records of where it was made (and is compared with): each root's
    path, and the current directory (under ".") for the relative paths mypy uses."""
    return {**roots.paths_by_name(), ".": os.getcwd()}
