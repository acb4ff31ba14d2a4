"""Choosing units against the store: candidates for each module (stored for this very source,
path, roots and options), chosen as one consistent set (see :mod:`metastore.mypy.selection`),
and an edited module's previous unit."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from metastore.mypy import selection
from metastore.mypy.debug import DEBUG, debug
from metastore.mypy.paths import Roots
from metastore.mypy.reading import Reading
from metastore.mypy.source_files import SourceFile
from metastore.mypy.units import Found, Manifest, Offer, module_id, stem_for
from metastore.mypy.view import MypyView
from metastore.store.api import StoreError


class Choosing(Reading):
    """Units chosen by lookup and selection."""

    def _select_closure(self, roots: Sequence[str], view: MypyView,
                        prefer: Mapping[str, str] | None = None) -> int:
        """Choose units for ``roots`` and every not-yet-chosen module their candidates depend
        on, as one consistent set (see :mod:`metastore.mypy.selection`): every recorded
        dependency hash equal to the interface hash of the unit chosen for that dependency,
        import cycles included, wherever the store holds such a set. Modules offered before
        are fixed. ``prefer`` (stem -> meta digest) names units to prefer among equals.
        A wrong choice only costs a re-check: mypy compares the hashes itself.

        Returns the number of dependency edges of the chosen units left disagreeing (with
        each other or with the modules offered before): the dependents mypy will re-check."""
        t0 = time.perf_counter()
        found: dict[str, Found] = {}
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
        if DEBUG:
            for stem in choice:
                debug(f"choose {stem}: {len(problem[stem])} candidates, "
                      f"{outcome.why.get(stem)}")
            debug(f"selection: {len(problem)} modules, {outcome.ambiguous} ambiguous, "
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

    def _offer_previous(self, edited: Mapping[str, Found], view: MypyView) -> None:
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
            self._touch_slots(slots)
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

    def _candidates(
        self, stems: Sequence[str], view: MypyView
    ) -> dict[str, Found]:
        """For each stem: (path mypy uses, its source, usable candidates as (layer, seq,
        manifest)), or None. One store lookup for all of them.

        Usable: stored for this very source, path and roots, and for the options mypy
        will compare (so mypy would not throw it away before looking at dependencies).
        """
        result: dict[str, Found] = dict.fromkeys(stems)
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
        stored = roots.resolve(manifest.path)
        # The same file under another spelling (a module named on the command line is at
        # the path given there, "pkg/mod.py"; the same module reached by an import is at the
        # path mypy's finder gives, "/abs/pkg/mod.py") is the same unit: mypy itself only
        # re-hashes the file and keeps the meta, and the served meta and data are patched
        # with the path this build uses (see Reading._served_part).
        if stored is None or (stored != path
                              and os.path.abspath(stored) != os.path.abspath(path)):
            return False
        options = view.options_key(module)
        if options is not None and manifest.options != options:
            return False
        return manifest.local_partial_types or manifest.is_parallel == view.has_workers
