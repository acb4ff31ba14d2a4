"""The processes of one mypy build (coordinator and parallel workers) and their scratch pad.

Kept apart from :mod:`metastore.mypy.protocol` so that installing the seam at start-up imports
nothing of mypy: importing mypy's compiled modules from Python before mypy's own code has
initialised them costs a shared-library load each (about 1 ms per module).
"""

from __future__ import annotations

import os
import tempfile
import time

#: Environment variable naming the session: ``<random id>:<coordinator pid>``.
SESSION_ENV = "_MYPY_METASTORE_SESSION"
#: Scratch pads not modified for this long belong to builds that were killed.
STALE_PAD_S = 24 * 3600
#: Leftover pads are looked for at most this often (per session directory).
PRUNE_INTERVAL_S = 3600
PRUNE_STAMP = ".pruned"


class Session:
    """The processes of one mypy build: the coordinator and its parallel workers.

    The session is created when the seam is installed in the coordinator process, before
    mypy starts any worker (mypy 1.20 starts them before it opens its cache), and travels
    to the workers in the environment mypy gives them. Each build of the coordinator
    starts from an empty scratch pad.
    """

    def __init__(self, ident: str, coordinator_pid: int) -> None:
        self.ident = ident
        self.is_coordinator = coordinator_pid == os.getpid()
        self.path = os.path.join(_session_dir(), f"{ident}.db")

    @classmethod
    def current(cls) -> Session | None:
        raw = os.environ.get(SESSION_ENV)
        if not raw or ":" not in raw:
            return None
        ident, _, pid = raw.partition(":")
        try:
            return cls(ident, int(pid))
        except ValueError:
            return None

    @classmethod
    def ensure(cls) -> None:
        """Create this process's session unless it belongs to another one (a worker)."""
        if cls.current() is None:
            os.environ[SESSION_ENV] = f"{os.urandom(8).hex()}:{os.getpid()}"
            try:
                _prune_now_and_then(_session_dir())
            except Exception:
                pass

    def remove(self) -> None:
        """Delete the scratch pad (the coordinator does this at the start and end of a build)."""
        try:
            from metastore.store.scratch import remove_scratch

            remove_scratch(self.path)
        except Exception:
            pass


def _prune_now_and_then(directory: str) -> None:
    """Delete scratch pads left by killed builds (older than :data:`STALE_PAD_S`), at most
    once per :data:`PRUNE_INTERVAL_S` per directory: a stamp file's mtime says when the
    directory was last pruned, so a run usually pays one ``stat`` (pruning lists and stats
    every file: 6 ms with the 1,256 pads the crash harness had left behind)."""
    stamp = os.path.join(directory, PRUNE_STAMP)
    now = time.time()
    try:
        if now - os.stat(stamp).st_mtime < PRUNE_INTERVAL_S:
            return
    except FileNotFoundError:
        if not os.path.isdir(directory):
            return  # nothing to prune; the directory is created with the first pad
    with open(stamp, "a"):
        pass
    os.utime(stamp, (now, now))
    from metastore.store.scratch import prune_scratch_dir

    prune_scratch_dir(directory, STALE_PAD_S)


def _session_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"mypy-metastore-sessions-{_uid()}")


def _uid() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else "user"
