"""The store behind mypy's ``--cache-store`` option (mypy with ``patches/`` applied).

With the patch, mypy names its metadata store in its own configuration::

    [mypy]
    cache_store = metastore.seams.cache_store:create

and calls :func:`create` once in the main process and once in each parallel worker. The
returned :class:`StoreAdapter` is a ``mypy.metastore.MetadataStore`` that forwards mypy's
calls to :class:`metastore.mypy.protocol.MypyStore` - the same mypy layer the SQL seam uses,
here without the seam: no SQLite connection is intercepted, and the build's
``BuildManager`` arrives through ``MetadataStore.attach_build`` instead of a ``gc`` search.

The store's settings (``store``, ``bases``, ``stats``) come from :func:`metastore.config.
load_config` as for the drop-in; ``enabled`` is not consulted: naming the factory is the
switch. Any problem with the store prints ONE line starting ``mypy-metastore:`` and mypy
gets its own default store instead, so it still runs correctly.

Importing this module needs a mypy whose ``MetadataStore`` admits interpreted subclasses
(the patched mypy, interpreted or compiled); stock compiled mypy never imports it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mypy.metastore import FilesystemMetadataStore, MetadataStore, SqliteMetadataStore

if TYPE_CHECKING:
    from mypy.options import Options

    from metastore.mypy.protocol import MypyStore
    from metastore.store.local import Store
    from metastore.store.tiered import TieredStore

__all__ = ["StoreAdapter", "create"]

_reported: set[str] = set()


def _report(message: str) -> None:
    """Print ``mypy-metastore: <message>`` on stderr, once per process."""
    if message not in _reported:
        _reported.add(message)
        print(f"mypy-metastore: {message}", file=sys.stderr, flush=True)


def create(cache_dir_prefix: str, options: Options, parallel_worker: bool) -> MetadataStore:
    """mypy's cache store factory (``--cache-store metastore.seams.cache_store:create``).

    Returns a :class:`StoreAdapter` on the configured store, or mypy's own default store
    (after one line on stderr) if the store cannot be used. With ``--cache-dir=/dev/null``
    (mypy's "write no cache") mypy's own store is returned silently.
    """
    if cache_dir_prefix.startswith(os.devnull):
        return _default_store(cache_dir_prefix, options, parallel_worker)
    try:
        adapter = _create(options, parallel_worker)
    except Exception as e:  # never let the store stop mypy
        message = str(e) or type(e).__name__
        _report(f"{message}; running mypy without the store")
        adapter = None
    if adapter is None:
        return _default_store(cache_dir_prefix, options, parallel_worker)
    return adapter


def _create(options: Options, parallel_worker: bool) -> StoreAdapter | None:
    """The adapter on the configured store, or None after one line on stderr.

    Raises only for problems reported by the caller (configuration, mypy version).
    """
    from metastore.mypy.compat import unsupported_reason
    from metastore.config import load_config
    from metastore.mypy.protocol import MypyStore
    from metastore.seams.session import Session
    from metastore.store.api import StoreError
    from metastore.seams.backend import open_backend
    from metastore.store.scratch import ScratchPad

    reason = unsupported_reason()
    if reason is not None:
        _report(reason)
        return None
    config_file = getattr(options, "config_file", None)
    config = load_config(mypy_argv=["--config-file", config_file] if config_file else ())
    if not parallel_worker:
        # Workers are started after this call and inherit the session in their environment.
        Session.ensure()
        session = Session.current()
        if session is not None and session.is_coordinator:
            session.remove()  # a new build of this process starts with an empty scratch pad
    try:
        backend = open_backend(config, _report, local_options=False)
    except StoreError as e:
        _report(f"{e}; running mypy without the store")
        return None
    except Exception as e:
        _report(f"cannot open the store {config.store.value}: {e}; "
                "running mypy without the store")
        return None
    adapter = StoreAdapter(
        backend, parallel_worker=parallel_worker, stats=config.stats.value,
        store_path=config.store.value)
    adapter.store = MypyStore(backend, adapter.manager, store_path=config.store.value,
                              report=_report, session=Session.current(),
                              open_scratch=ScratchPad)
    return adapter


def _default_store(
    cache_dir_prefix: str, options: Options, parallel_worker: bool
) -> MetadataStore:
    """The store mypy creates without ``--cache-store`` (mypy 2.4's ``create_metastore``)."""
    if options.sqlite_cache:
        return SqliteMetadataStore(cache_dir_prefix, set_journal_mode=not parallel_worker,
                                   num_shards=options.sqlite_num_shards)
    return FilesystemMetadataStore(cache_dir_prefix)


class StoreAdapter(MetadataStore):
    """mypy's ``MetadataStore`` protocol on :class:`MypyStore`.

    Contract with mypy: a miss raises ``FileNotFoundError`` (as mypy's own stores do); a
    write that cannot be buffered returns False; nothing else ever raises - an internal
    problem is reported once and answered as a miss.
    """

    def __init__(self, backend: Store | TieredStore, *, parallel_worker: bool, stats: bool,
                 store_path: str) -> None:
        self.backend: Store | TieredStore | None = backend
        self.store: MypyStore | None = None
        self.parallel_worker = parallel_worker
        self.stats_enabled = stats
        self.store_path = store_path
        self._manager: Any | None = None

    def attach_build(self, manager: Any) -> None:
        """mypy hands over the build that uses this store (before its first read)."""
        self._manager = manager

    def manager(self) -> Any | None:
        """The ``BuildManager`` mypy attached, or None (then nothing is offered or published)."""
        return self._manager

    def getmtime(self, name: str) -> float:
        mtime = None
        if self.store is not None:
            try:
                mtime = self.store.getmtime(name)
            except Exception as e:
                _report(f"internal error ({e!r}); treating the entry as missing")
        if mtime is None:
            raise FileNotFoundError(name)
        return float(mtime)

    def read(self, name: str) -> bytes:
        data = None
        if self.store is not None:
            try:
                data = self.store.read(name)
            except Exception as e:
                _report(f"internal error ({e!r}); treating the entry as missing")
        if data is None:
            raise FileNotFoundError(name)
        return data

    def write(self, name: str, data: bytes, mtime: float | None = None) -> bool:
        if self.store is None:
            return False
        try:
            return self.store.write(name, bytes(data), mtime)
        except Exception as e:
            _report(f"internal error ({e!r}); entry {name} not written")
            return False

    def remove(self, name: str) -> None:
        """Entries are immutable units; mypy 2.4 never removes one."""

    def commit(self) -> None:
        if self.store is None:
            return
        try:
            self.store.commit()
        except Exception as e:
            _report(f"internal error while saving results ({e!r})")

    def list_all(self) -> Iterable[str]:
        return [] if self.store is None else self.store.names()

    def close(self) -> None:
        """Publish what is left; the coordinator prints the stats line if asked to. Idempotent."""
        store, self.store = self.store, None
        if store is not None:
            try:
                stats = store.close(final=not self.parallel_worker)
            except Exception as e:
                _report(f"internal error while saving results: {e!r}")
                stats = store.stats
            if self.stats_enabled and not self.parallel_worker:
                from metastore.seams.backend import remote_line

                print(stats.line(self.store_path) + remote_line(self.backend), file=sys.stderr,
                      flush=True)
        backend, self.backend = self.backend, None
        if backend is not None:
            try:
                backend.close()
            except Exception:
                pass
