"""The SQL seam: mypy's SQLite cache calls, answered by the content-addressed store.

Compiled mypy cannot be given another ``MetadataStore``, but its
``SqliteMetadataStore`` opens its database with ``sqlite3.dbapi2.connect(...)`` looked up
at call time, and only uses ``execute`` (with ``fetchall`` or iteration on the result),
``executescript``, ``commit`` and ``close`` (mypy/metastore.py, 1.20-2.4). :func:`install`
replaces that function; the connections it returns translate mypy's few statements into
calls on :class:`metastore.mypy.protocol.MypyStore`.

Only databases named like mypy's cache (``<cache-dir>/<X.Y>/cache.db`` or
``cache.<n>.db``) are intercepted; anything else gets a real SQLite connection. If the
store cannot be opened, mypy gets real connections too and runs exactly as stock mypy,
after one line on stderr saying why.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from metastore.config import Config

if TYPE_CHECKING:
    from metastore.mypy.protocol import MypyStore
    from metastore.store.api import Base
    from metastore.store.local import Store
    from metastore.store.tiered import TieredStore

_CACHE_DB = re.compile(r"(^|[/\\])\d+\.\d+[/\\]cache(\.\d+)?\.db$")

_CACHE_PREFIX = re.compile(r"(^|[/\\])\d+\.\d+$")

_config: Config | None = None
_real_connect: Callable[..., Any] | None = None
_real_makedirs: Callable[..., None] | None = None
#: Cache prefixes (``<cache-dir>/<X.Y>``, absolute) -> the directories ``os.makedirs``
#: created for them in this process, deepest first (see :func:`_makedirs`).
_created: dict[str, list[str]] = {}
#: Cache prefixes whose creation failed (a read-only checkout) -> the error, raised only if
#: mypy ends up needing the directory (the store cannot be opened).
_not_created: dict[str, OSError] = {}
_run: _Run | None = None
_reported: set[str] = set()


def install(config: Config) -> None:
    """Route mypy's SQLite cache in this process to the store described by ``config``.

    Idempotent. Costs nothing until mypy opens its cache.
    """
    global _config, _real_connect
    import sqlite3.dbapi2 as dbapi2

    _config = config
    from metastore.seams.session import Session

    Session.ensure()
    if getattr(dbapi2.connect, "_mypy_metastore", False):
        return
    _real_connect = dbapi2.connect
    _install_makedirs()

    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        return _connect(database, args, kwargs)

    connect._mypy_metastore = True  # type: ignore[attr-defined]
    dbapi2.connect = connect


def _install_makedirs() -> None:
    """Wrap ``os.makedirs`` to learn which directories mypy creates for its cache.

    mypy's ``SqliteMetadataStore`` creates ``<cache-dir>/<X.Y>`` just before it connects to
    its shards; with the store serving everything, the directory stays empty, and at the end
    of the build mypy writes ``.gitignore`` and ``CACHEDIR.TAG`` into ``<cache-dir>`` because
    it exists. The directories created here are removed again once the store serves the
    build (:meth:`_Run._locate`), so a run served by the store leaves the checkout as it was.
    Only paths ending in ``X.Y`` are looked at; the call itself is mypy's.
    """
    global _real_makedirs
    if getattr(os.makedirs, "_mypy_metastore", False):
        return
    _real_makedirs = os.makedirs

    def makedirs(name: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        _makedirs(name, mode, exist_ok)

    makedirs._mypy_metastore = True  # type: ignore[attr-defined]
    os.makedirs = makedirs


def _makedirs(name: Any, mode: int, exist_ok: bool) -> None:
    assert _real_makedirs is not None
    path = name if isinstance(name, str) else None
    if _config is None or path is None or not _CACHE_PREFIX.search(path.rstrip("/\\")):
        _real_makedirs(name, mode, exist_ok)
        return
    full = os.path.abspath(path)
    missing: list[str] = []
    directory = full
    while not os.path.lexists(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    try:
        _real_makedirs(name, mode, exist_ok)
    except OSError as e:
        if not missing:
            raise
        # A read-only checkout: the store does not need the directory; raise this error
        # only if mypy has to use its own cache after all (see _connect).
        _not_created[full] = e
        return
    if missing:
        _created[full] = missing


def _remove_created(prefix: str) -> None:
    """Remove the empty directories :func:`_makedirs` created for ``prefix``."""
    for directory in _created.pop(prefix, []):
        try:
            os.rmdir(directory)
        except OSError:
            break  # not empty (mypy put something there) or gone: leave it and its parents


def config_bases(config: Config) -> list[Base]:
    """The configured bases as :class:`metastore.store.api.Base` (with their immutable flag)."""
    from metastore.config import split_base
    from metastore.store.api import Base

    return [Base(*split_base(spec)) for spec in config.bases.value]


def report_once(message: str) -> None:
    """Print ``mypy-metastore: <message>`` on stderr, once per process."""
    if message not in _reported:
        _reported.add(message)
        print(f"mypy-metastore: {message}", file=sys.stderr, flush=True)


def _connect(database: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    global _run
    assert _real_connect is not None
    if _config is None or not isinstance(database, str) or not _CACHE_DB.search(database):
        return _real_connect(database, *args, **kwargs)
    prefix = os.path.dirname(os.path.abspath(database))
    if _run is None or _run.prefix != prefix or database in _run.files:
        if _run is not None:
            _run.finish(final=False)
        _run = _Run(prefix, _config)
    _run.files.add(database)
    if _run.store is None:
        error = _not_created.pop(prefix, None)
        if error is not None:
            raise error  # what mypy's own makedirs raised: it runs without the store
        return _real_connect(database, *args, **kwargs)
    _not_created.pop(prefix, None)
    return ShimConnection(_run, database)


class _Run:
    """One mypy build in this process: the shard connections it opened, one store."""

    def __init__(self, prefix: str, config: Config) -> None:
        # Imported here, not at module level: the startup hook installs the seam while
        # mypy.build is being imported, before mypy's cache classes may be imported.
        from metastore.mypy.protocol import MypyStore
        from metastore.seams import ahead
        from metastore.seams.session import Session
        from metastore.store.api import StoreError
        from metastore.seams.backend import open_backend
        from metastore.store.scratch import ScratchPad

        self.prefix = prefix
        self.files: set[str] = set()
        self.open = 0
        self.stats_enabled = config.stats.value
        self.store_path = config.store.value
        self.backend: Store | TieredStore | None = None
        self.created_dir: str | None = None
        self.verbose = False
        self.store: MypyStore | None = None
        self.first: ShimConnection | None = None
        session = Session.current()
        self.is_coordinator = session is None or session.is_coordinator
        if session is not None and session.is_coordinator:
            session.remove()  # a new build of this process starts with an empty scratch pad
        try:
            self.backend = open_backend(config, report_once)
        except StoreError as e:
            report_once(f"{e}; running mypy without the store")
            return
        except Exception as e:  # never let the store stop mypy
            report_once(f"cannot open the store {config.store.value}: {e}; "
                        "running mypy without the store")
            return
        top = self.backend.top
        self.created_dir = top.created_dir if top is not None else None
        self.store = MypyStore(self.backend, self._locate, store_path=self.store_path,
                               report=report_once, session=Session.current(),
                               open_scratch=ScratchPad,
                               ahead=ahead.current() if self.is_coordinator else None)

    def _locate(self) -> Any | None:
        from metastore.mypy.view import find_manager

        manager = None if self.first is None else find_manager(self.first)
        self.verbose = manager is not None and getattr(manager.options, "verbosity", 0) > 0
        # The store serves this build: the cache directory mypy just created stays empty,
        # unless mypy will write its missing-stubs list there (--install-types).
        if manager is not None and not getattr(manager.options, "install_types", False):
            _remove_created(self.prefix)
        return manager

    def finish(self, *, final: bool) -> None:
        if self.store is None:
            return
        store, self.store = self.store, None
        try:
            stats = store.close(final=final and self.is_coordinator)
        except Exception as e:
            report_once(f"internal error while saving results: {e!r}")
            stats = store.stats
        if final and self.is_coordinator and self.created_dir is not None and (
                self.stats_enabled or self.verbose):
            print(f"mypy-metastore: created directory {self.created_dir} for the store "
                  f"{self.store_path}", file=sys.stderr, flush=True)
        if final and self.is_coordinator and self.stats_enabled:
            from metastore.seams.backend import remote_line

            print(stats.line(self.store_path) + remote_line(self.backend), file=sys.stderr,
                  flush=True)
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:
                pass


#: What mypy's statements ask (see :meth:`ShimConnection.execute`), by statement text:
#: mypy runs a handful of fixed statements tens of thousands of times per build.
_DATA, _MTIME, _INSERT, _PATHS, _OTHER = "data", "mtime", "insert", "paths", "other"
_VERBS: dict[str, str] = {}


def _verb(sql: str) -> str:
    """What ``sql`` (one of mypy's cache statements) asks."""
    head = sql.lstrip()[:24].upper()
    for prefix, verb in (("SELECT DATA", _DATA), ("SELECT MTIME", _MTIME),
                         ("INSERT", _INSERT), ("SELECT PATH", _PATHS)):
        if head.startswith(prefix):
            return verb
    return _OTHER


class ShimCursor:
    """The result of one statement: what mypy calls ``fetchall`` on or iterates."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[tuple[Any, ...]] | None = None) -> None:
        self._rows = [] if rows is None else rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class ShimConnection:
    """A DB-API-shaped connection that answers mypy's cache statements from the store.

    Contract with mypy: a miss is zero rows; a failed write raises
    ``sqlite3.OperationalError`` (which mypy treats as "entry not written"); nothing else
    ever raises - an internal problem is reported once and answered as a miss.
    """

    def __init__(self, run: _Run, database: str) -> None:
        self._run = run
        self._database = database
        self._closed = False
        run.open += 1
        if run.first is None:
            run.first = self

    def execute(self, sql: str, params: Sequence[Any] = ()) -> ShimCursor:
        store = self._run.store
        if store is None:
            return ShimCursor()
        verb = _VERBS.get(sql) or _VERBS.setdefault(sql, _verb(sql))
        try:
            if verb is _DATA:
                data = store.read(params[0])
                return ShimCursor(None if data is None else [(data,)])
            if verb is _MTIME:
                mtime = store.getmtime(params[0])
                return ShimCursor(None if mtime is None else [(float(mtime),)])
            if verb is _INSERT:
                name, mtime, data = params
                if not store.write(name, bytes(data), mtime):
                    raise sqlite3.OperationalError(f"cannot write {name}")
                return ShimCursor()
            if verb is _PATHS:
                return ShimCursor([(name,) for name in store.names()])
            return ShimCursor()  # PRAGMA, CREATE, DELETE (mypy <= 1.18 only)
        except sqlite3.OperationalError:
            raise
        except Exception as e:
            report_once(f"internal error ({e!r}); treating the entry as missing")
            if verb is _INSERT:
                raise sqlite3.OperationalError(str(e)) from None
            return ShimCursor()

    def executescript(self, script: str) -> None:
        """mypy creates its schema here; the store has its own."""

    def commit(self) -> None:
        store = self._run.store
        if store is None:
            return
        try:
            store.commit()
        except Exception as e:
            report_once(f"internal error while saving results ({e!r})")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run.open -= 1
        if self._run.open <= 0:
            self._run.finish(final=True)
            global _run
            if _run is self._run:
                _run = None
