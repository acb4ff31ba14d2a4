"""Read-only view of the running mypy build: options, plugins, module paths, roots.

The SQL seam cannot see mypy's options, so the store reads them from mypy's own
``BuildManager`` (found by the seam). Only attributes and module-level functions that
mypy 1.20-2.4 all have are used, and nothing here changes mypy's state: in particular
module paths are taken from mypy's *existing* lookup results, never by calling
``find_module`` (which caches its answer and could change mypy's diagnostics).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from metastore.mypy.cache_codec import canonical_json
from metastore.mypy.paths import Roots
from metastore.store.api import digest


class MypyView:
    """What the store needs to know about one mypy build (one ``BuildManager``)."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.options = manager.options
        self.fixed_format = bool(getattr(self.options, "fixed_format_cache", False))
        self.parallel_worker = bool(getattr(manager, "parallel_worker", False))
        self.has_workers = int(getattr(self.options, "num_workers", 0) or 0) > 0
        self._roots: Roots | None = None
        #: mypy abandons a meta whose recorded size differs from the file's - except in Bazel
        #: mode (it trusts the cache) and when it uses the fine-grained cache (it keeps stale
        #: metas: ``validate_meta``, ``BuildManager.use_fine_grained_cache``).
        self.abandons_metas_of_changed_files = not any(
            getattr(self.options, name, False) for name in ("bazel", "use_fine_grained_cache"))
        self._options_cache: dict[str, str] = {}
        self._snapshot_keys: dict[tuple[tuple[str, object], ...], str] = {}
        self._options_fingerprint: str | None = None
        self._source_modules: dict[str, str] | None = None
        get_stat = getattr(manager, "get_stat", None)
        #: The stat of the file mypy reads for a module path (its shadow file, if any), None
        #: if there is none - mypy's own, cached for the build (``BuildManager.get_stat``):
        #: the store and mypy's ``validate_meta`` see the same stat, taken once.
        self.stat: Callable[[str], os.stat_result | None] = (
            get_stat if callable(get_stat) else self._stat_or_none)

    # -- namespace ---------------------------------------------------------------------

    def namespace(self) -> tuple[bytes, str]:
        """(digest, human label) of what mypy treats as globally incompatible.

        Entries from another namespace are never offered: another mypy version, cache
        format, Python version, or set of plugins (mypy itself throws the whole cache
        away when its plugins snapshot changes).
        """
        from metastore.mypy.cache_codec import cache_version, mypy_cache

        snapshot = dict(getattr(self.manager, "plugins_snapshot", {}) or {})
        parts = {
            "version": str(self.manager.version_id),
            "format": "ff" if self.fixed_format else "json",
            "cache_versions": [cache_version(), getattr(mypy_cache, "CACHE_VERSION", 0)],
            "python_version": list(self.options.python_version),
            "plugins": snapshot,
        }
        fmt = "ff" if self.fixed_format else "json"
        pyver = "%d.%d" % tuple(self.options.python_version)
        plugins = "no plugins" if not snapshot else "plugins " + digest(
            canonical_json(snapshot).encode()
        ).hex()[:8]
        label = f"mypy {self.manager.version_id} {fmt} py{pyver} {plugins}"
        return digest(canonical_json(parts).encode()), label

    def plugins_snapshot(self) -> dict[str, str]:
        return dict(getattr(self.manager, "plugins_snapshot", {}) or {})

    def options_fingerprint(self) -> str:
        """A digest of what every module's options snapshot (see :meth:`options_key`) is
        computed from: the global options that affect the cache and the per-module sections
        of the configuration, in their order. Equal fingerprints give equal snapshots; a
        difference only costs a per-module comparison. "" if mypy has no such options."""
        if self._options_fingerprint is None:
            try:
                platform, values = self.options.select_options_affecting_cache()
                sections = list(getattr(self.options, "per_module_options", {}).items())
                text = json.dumps([platform, values, sections], sort_keys=True, default=repr)
                self._options_fingerprint = digest(text.encode()).hex()
            except Exception:
                self._options_fingerprint = ""
        return self._options_fingerprint

    def _stat_or_none(self, path: str) -> os.stat_result | None:
        try:
            return os.stat(self.source_file(path))
        except OSError:
            return None

    # -- per module ----------------------------------------------------------------------

    def options_key(self, module_id: str) -> str | None:
        """mypy's own per-module options snapshot (``mypy.build.options_snapshot``), as text.

        None if mypy cannot compute it at this point of the build.
        """
        cached = self._options_cache.get(module_id)
        if cached is not None:
            return cached
        try:
            from mypy.build import options_snapshot

            snapshot = options_snapshot(module_id, self.manager)
        except Exception:
            return None
        try:  # mypy 2.x: a platform and a hash; many modules share one snapshot
            shared = tuple(sorted(snapshot.items()))
            key = self._snapshot_keys.get(shared)
            if key is None:
                key = self._snapshot_keys[shared] = canonical_json(snapshot)
        except TypeError:  # unhashable values (a full snapshot, as with --debug-cache)
            key = canonical_json(snapshot)
        self._options_cache[module_id] = key
        return key

    def module_path(self, module_id: str) -> str | None:
        """The path mypy uses (or will use) for ``module_id``, or None if it has none.

        Sources come from the command line (``BuildSourceSet``); imported modules from
        mypy's module finder. A module the finder has not been asked about yet (a
        dependency mypy has not reached) is looked up now with the finder's own
        ``find_module``, so that units are chosen knowing which source each dependency
        is (e.g. which version of a third-party package this venv holds). Only a found
        path is kept in the finder's memo - the same answer mypy gets later; "not found"
        is left for mypy to determine (its reason depends on how mypy asks).
        """
        path = self.source_modules().get(module_id)
        if path:
            return path
        finder = self.manager.find_module_cache
        results = getattr(finder, "results", {})
        if module_id in results:
            found = results[module_id]
            return found if isinstance(found, str) else None
        try:
            found = finder.find_module(module_id, fast_path=True)
        except Exception:
            found = None
        if isinstance(found, str):
            return found
        results.pop(module_id, None)
        return None

    def source_file(self, path: str) -> str:
        """The file mypy reads for ``path``: its ``--shadow-file`` if it has one (mypy then
        records that file's hash, mtime and size in the meta), else ``path``."""
        if not getattr(self.manager, "shadow_map", None):
            return path
        swapped: str = self.manager.maybe_swap_for_shadow_path(path)
        return swapped

    def source_modules(self) -> dict[str, str]:
        """The modules named on mypy's command line (or in its config), with their paths
        (the same dict every call: do not change it)."""
        if self._source_modules is None:
            modules = getattr(self.manager.source_set, "source_modules", {})
            self._source_modules = {module: str(path) for module, path in modules.items()
                                    if path}
        return self._source_modules

    def roots(self) -> Roots:
        """Directories whose location may change between runs: the current directory,
        mypy's search paths (site-packages, typeshed, MYPYPATH) and the interpreter's prefixes.
        """
        if self._roots is not None:
            return self._roots
        named: list[tuple[str, str]] = [("cwd", os.getcwd())]
        search = getattr(self.manager, "search_paths", None)
        for kind in ("package_path", "typeshed_path", "mypy_path"):
            for index, directory in enumerate(getattr(search, kind, ()) or ()):
                named.append((f"{kind}{index}", os.path.abspath(directory)))
        named.append(("prefix", sys.prefix))
        named.append(("base_prefix", sys.base_prefix))
        self._roots = Roots.from_dirs(named)
        return self._roots


def find_manager(owner: object) -> Any | None:
    """The ``BuildManager`` whose metadata store holds ``owner`` (one of our connections).

    mypy keeps its SQLite connections in ``SqliteMetadataStore.dbs`` (a list) and the
    store in ``BuildManager.metastore``; three referrer hops lead from our connection to
    the build it belongs to. Costs a few milliseconds, once per build and process.

    Call it early (mypy reads its plugins snapshot from the store inside
    ``BuildManager.__init__``) and keep the answer: mypy's workers later ``gc.freeze()``
    their objects, and frozen objects are invisible to ``gc.get_referrers``.
    """
    import gc

    # The manager was created a moment ago: look among the youngest objects first (a
    # short list), then walk referrers (three scans of every tracked object, ~1 ms each).
    for generation in (0, 1):
        for candidate in gc.get_objects(generation):
            if type(candidate).__name__ == "BuildManager" and _holds(candidate, owner):
                return candidate
    stores: list[object] = []
    for holder in gc.get_referrers(owner):
        if type(holder).__name__ == "SqliteMetadataStore":
            stores.append(holder)  # mypy 1.20: the connection is the store's ``db``
        elif isinstance(holder, list):  # mypy 2.x: the store's ``dbs`` shard list
            stores.extend(s for s in gc.get_referrers(holder)
                          if type(s).__name__ == "SqliteMetadataStore")
    for store in stores:
        for manager in gc.get_referrers(store):
            if type(manager).__name__ == "BuildManager" and getattr(
                manager, "metastore", None
            ) is store:
                return manager
    return None


def _holds(manager: object, owner: object) -> bool:
    """True if ``manager``'s metadata store holds the connection ``owner``."""
    store = getattr(manager, "metastore", None)
    if type(store).__name__ != "SqliteMetadataStore":
        return False
    if getattr(store, "db", None) is owner:  # mypy 1.20
        return True
    return any(db is owner for db in getattr(store, "dbs", None) or ())  # mypy 2.x
