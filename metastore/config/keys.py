"""The settings of mypy-metastore: keys, environment variables, flags, defaults, types.

Settings (see README.md, section Configuration):

============  ====  ===========================  ===============================
key           type  environment                  drop-in flag
============  ====  ===========================  ===============================
enabled       bool  MYPY_METASTORE (0/1)         --metastore-off
store         path  MYPY_METASTORE_STORE         --metastore-store PATH
bases         list  MYPY_METASTORE_BASES         --metastore-base PATH (repeated)
stats         bool  MYPY_METASTORE_STATS (0/1)   --metastore-stats
max_size      size  MYPY_METASTORE_MAX_SIZE      -
copy_hits     bool  MYPY_METASTORE_COPY_HITS     -
verify_bases  bool  MYPY_METASTORE_VERIFY_BASES  -
remote        url   MYPY_METASTORE_REMOTE        --metastore-remote URL
remote_read_only bool MYPY_METASTORE_REMOTE_READ_ONLY -
remote_key    str   MYPY_METASTORE_REMOTE_KEY    -
remote_timeout float MYPY_METASTORE_REMOTE_TIMEOUT -
============  ====  ===========================  ===============================

``remote`` is a remote tier below the store (``redis://...`` or ``http[s]://...``; empty:
none); ``remote_key`` a shared secret: entries written are tagged with HMAC-SHA256 under
it and entries read without a valid tag are rejected; ``remote_timeout`` in seconds.

``bases`` is a list of paths; ``verify_bases`` (default on) makes every blob read from a base
be checked against its digest (a base whose blobs do not match is reported and not used).

A base path may end with ``?immutable=1`` (SQLite's URI parameter): the base is then
declared never to change while in use and is opened without locks or ``-wal``/``-shm``
files (see :func:`split_base`). A size is a number of bytes with an optional suffix
``K``/``M``/``G``/``T`` (powers of 1024; ``KiB``, ``MB``, ... accepted); 0 means no cap.

The file is the one mypy itself would read (``--config-file`` in mypy's argv, else mypy's
own search order), with our section ``[tool.metastore]`` (pyproject.toml) or
``[metastore]`` (mypy.ini, .mypy.ini, setup.cfg, user config files).

Every path in a :class:`Config` is absolute, normalised and free of symbolic links
(``os.path.realpath``: a store reached through a symlinked directory, such as the Pants
named cache ``.cache/mypy_cache`` in a sandbox, is named by its real location, which
outlives the sandbox and can be created even when the link dangles). Relative paths in a
file are relative to that file's directory; in the environment and in flags, to the
current directory. ``~`` is expanded everywhere.

This module is imported by the startup hook of every Python process that has the package
installed *only when activation is requested*; it still keeps its imports small and lazy
(tomllib and configparser are imported only when a file is read).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

CONFIG_KEYS: tuple[str, ...] = ("enabled", "store", "bases", "stats", "max_size", "copy_hits",
                                   "verify_bases", "remote", "remote_read_only", "remote_key",
                                   "remote_timeout")

ENV_ENABLED = "MYPY_METASTORE"
ENV_STORE = "MYPY_METASTORE_STORE"
ENV_BASES = "MYPY_METASTORE_BASES"
ENV_STATS = "MYPY_METASTORE_STATS"
ENV_MAX_SIZE = "MYPY_METASTORE_MAX_SIZE"
ENV_COPY_HITS = "MYPY_METASTORE_COPY_HITS"
ENV_VERIFY_BASES = "MYPY_METASTORE_VERIFY_BASES"
ENV_REMOTE = "MYPY_METASTORE_REMOTE"
ENV_REMOTE_READ_ONLY = "MYPY_METASTORE_REMOTE_READ_ONLY"
ENV_REMOTE_KEY = "MYPY_METASTORE_REMOTE_KEY"
ENV_REMOTE_TIMEOUT = "MYPY_METASTORE_REMOTE_TIMEOUT"
#: Default timeout of one remote batch, in seconds.
DEFAULT_REMOTE_TIMEOUT = 2.0

#: Default cap of the top layer (as ccache's default cache size).
DEFAULT_MAX_SIZE = 5 * 1024**3
IMMUTABLE_SUFFIX = "?immutable="
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

#: Drop-in flags: flag -> (setting key, takes a value).
FLAGS: dict[str, tuple[str, bool]] = {
    "--metastore-store": ("store", True),
    "--metastore-base": ("bases", True),
    "--metastore-stats": ("stats", False),
    "--metastore-off": ("enabled", False),
    "--metastore-remote": ("remote", True),
}
_FLAG_OF_KEY: dict[str, str] = {key: flag for flag, (key, _) in FLAGS.items()}
_FLAG_PREFIX = "--metastore-"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_BOOL_HELP = "expected a boolean (true/false, 1/0, yes/no, on/off)"

# Mirrors mypy/defaults.py (CONFIG_NAMES, SHARED_CONFIG_NAMES, USER_CONFIG_FILES) of
# mypy 1.20.2 .. 2.4.1 (identical in all of them); re-declared here so that resolving
# the configuration does not import mypy. tests/test_config.py checks they still agree.
_MYPY_CONFIG_NAMES: tuple[str, ...] = ("mypy.ini", ".mypy.ini")
_MYPY_SHARED_CONFIG_NAMES: tuple[str, ...] = ("pyproject.toml", "setup.cfg")
_VCS_ROOT_MARKERS: tuple[str, ...] = (".git", ".hg")


class ConfigError(Exception):
    """A configuration problem. ``str()`` is one line naming where and what is wrong."""


class Setting(Generic[T]):
    """One effective setting and where it came from (immutable by convention).

    ``source`` is ``"default"``, ``"env NAME"``, ``"flag --metastore-..."`` or
    ``"<absolute file path> [tool.metastore]"`` / ``"<absolute file path> [metastore]"``.
    (A plain class: a dataclass costs about 0.6 ms to define, paid at every mypy start.)
    """

    __slots__ = ("value", "source")

    def __init__(self, value: T, source: str) -> None:
        self.value = value
        self.source = source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Setting):
            return NotImplemented
        return (self.value, self.source) == (other.value, other.source)

    def __hash__(self) -> int:
        return hash((self.value, self.source))

    def __repr__(self) -> str:
        return f"Setting({self.value!r}, {self.source!r})"


class Config(NamedTuple):
    """The effective configuration; every path is absolute.

    ``config_file`` is the file our section was read from (None if none was read).
    """

    enabled: Setting[bool]
    store: Setting[str]
    bases: Setting[tuple[str, ...]]
    stats: Setting[bool]
    config_file: str | None = None
    max_size: Setting[int] = Setting(DEFAULT_MAX_SIZE, "default")
    copy_hits: Setting[bool] = Setting(False, "default")
    verify_bases: Setting[bool] = Setting(True, "default")
    remote: Setting[str] = Setting("", "default")
    remote_read_only: Setting[bool] = Setting(False, "default")
    remote_key: Setting[str] = Setting("", "default")
    remote_timeout: Setting[float] = Setting(DEFAULT_REMOTE_TIMEOUT, "default")


# --------------------------------------------------------------------------- defaults


def default_store_path(environ: Mapping[str, str] = os.environ) -> str:
    """The per-user default store: ``<user cache dir>/mypy-metastore/store.db``.

    The cache dir is ``$XDG_CACHE_HOME`` if set to an absolute path (on every platform),
    else ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS and ``~/.cache``
    elsewhere. Always returns an absolute path; never touches the file system.
    """
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        base = xdg
    elif sys.platform == "win32" and environ.get("LOCALAPPDATA"):
        base = environ["LOCALAPPDATA"]
    elif sys.platform == "darwin":
        base = os.path.join(_home(environ), "Library", "Caches")
    else:
        base = os.path.join(_home(environ), ".cache")
    return os.path.normpath(os.path.join(base, "mypy-metastore", "store.db"))


def _home(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME") or environ.get("USERPROFILE")
    return home if home else os.path.expanduser("~")


def _expanduser(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/") or path.startswith("~" + os.sep):
        return _home(environ) + path[1:]
    return os.path.expanduser(path)


def _abspath(path: str, base_dir: str, environ: Mapping[str, str]) -> str:
    return os.path.normpath(os.path.join(base_dir, _expanduser(path, environ)))


# --------------------------------------------------------------------------- argv


def mask_url(url: str) -> str:
    """*url* with its password (or lone user token) replaced by ``***`` (for display)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    creds, _, host = rest.partition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user + ':***' if colon else '***'}@{host}"
