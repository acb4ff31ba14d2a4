"""Effective configuration of mypy-metastore: defaults < file < environment < flags.

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
============  ====  ===========================  ===============================

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
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_MAX_SIZE",
    "ENV_BASES",
    "ENV_COPY_HITS",
    "ENV_VERIFY_BASES",
    "ENV_ENABLED",
    "ENV_MAX_SIZE",
    "ENV_STATS",
    "ENV_STORE",
    "FLAGS",
    "Config",
    "ConfigError",
    "Setting",
    "default_store_path",
    "expand_argfiles",
    "export_to_environ",
    "find_config_file",
    "load_config",
    "parse_size",
    "split_argv",
    "split_base",
]

T = TypeVar("T")

CONFIG_KEYS: tuple[str, ...] = ("enabled", "store", "bases", "stats", "max_size", "copy_hits",
                                   "verify_bases")

ENV_ENABLED = "MYPY_METASTORE"
ENV_STORE = "MYPY_METASTORE_STORE"
ENV_BASES = "MYPY_METASTORE_BASES"
ENV_STATS = "MYPY_METASTORE_STATS"
ENV_MAX_SIZE = "MYPY_METASTORE_MAX_SIZE"
ENV_COPY_HITS = "MYPY_METASTORE_COPY_HITS"
ENV_VERIFY_BASES = "MYPY_METASTORE_VERIFY_BASES"

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


def split_argv(argv: Sequence[str]) -> tuple[dict[str, object], list[str]]:
    """Separate our ``--metastore-*`` flags from mypy's arguments.

    Returns ``(flags, mypy_argv)``. ``flags`` maps setting keys to values:
    ``store`` -> str, ``bases`` -> list[str] (in order, ``--metastore-base`` repeats),
    ``stats`` -> True, ``enabled`` -> False (``--metastore-off``). ``mypy_argv`` is every
    other argument, unchanged and in order (``@file`` argument lists are not looked into:
    call :func:`expand_argfiles` first to honour flags inside them).

    Flags taking a value accept ``--flag VALUE`` and ``--flag=VALUE``; in the first form
    the value must not start with ``-``. A bare ``--`` ends option processing, as in
    mypy's argparse: it and everything after it go to mypy untouched.

    Raises ConfigError for an unknown ``--metastore-*`` flag (listing the valid ones),
    a missing value, or a value given to a flag that takes none.
    """
    flags: dict[str, object] = {}
    rest: list[str] = []
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        i += 1
        if arg == "--":
            rest.append(arg)
            rest.extend(argv[i:])
            break
        if not arg.startswith(_FLAG_PREFIX):
            rest.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        if name not in FLAGS:
            raise ConfigError(
                f"unknown option {name!r}; valid options: {', '.join(sorted(FLAGS))}"
            )
        key, takes_value = FLAGS[name]
        if not takes_value:
            if eq:
                raise ConfigError(f"option {name} takes no value (got {arg!r})")
            flags[key] = key != "enabled"  # --metastore-off -> enabled=False
            continue
        if eq:
            value = inline
        else:
            if i >= n or argv[i].startswith("-"):
                raise ConfigError(f"option {name} needs a value: {name} PATH or {name}=PATH")
            value = argv[i]
            i += 1
        if not value:
            raise ConfigError(f"option {name} needs a non-empty path")
        if key == "bases":
            bases = flags.setdefault("bases", [])
            assert isinstance(bases, list)
            bases.append(value)
        else:
            flags[key] = value
    return flags, rest


def expand_argfiles(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``@file`` argument replaced by that file's lines, as mypy does.

    mypy's argument parser has ``fromfile_prefix_chars="@"``; this repeats argparse's
    expansion (``ArgumentParser._read_args_from_files``, Python 3.10 .. 3.13): every
    argument starting with ``@`` (also after ``--``) is replaced by the lines of the file
    it names (relative to the current directory), one argument per line, recursively.
    Like argparse, the file is read with the locale encoding before Python 3.12 and with
    the file system encoding from 3.12 on. Expanding first lets ``--metastore-*`` flags and
    ``--config-file`` live in an argument file too (Pants passes its file list as
    ``@__files.txt``); the expanded list means the same to mypy as the original.

    A file that cannot be read is left as its ``@file`` argument, for mypy to report.
    Raises ConfigError when files nest more than :data:`_MAX_ARGFILE_DEPTH` deep (a file
    that includes itself; argparse would recurse until RecursionError).
    """
    return _expand_argfiles(argv, 0)


_MAX_ARGFILE_DEPTH = 40


def _expand_argfiles(argv: Sequence[str], depth: int) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if not arg.startswith("@"):
            out.append(arg)
            continue
        try:
            if sys.version_info >= (3, 12):
                f = open(arg[1:], encoding=sys.getfilesystemencoding(),
                         errors=sys.getfilesystemencodeerrors())
            else:
                f = open(arg[1:])
            with f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            out.append(arg)
            continue
        if depth >= _MAX_ARGFILE_DEPTH:
            raise ConfigError(f"argument file {arg[1:]!r} nests argument files more than "
                              f"{_MAX_ARGFILE_DEPTH} deep (does it include itself?)")
        out.extend(_expand_argfiles(lines, depth + 1))
    return out


def _config_file_from_argv(mypy_argv: Sequence[str]) -> str | None:
    """The ``--config-file`` value in mypy's argv (last one wins, as with argparse).

    Returns None if absent; ``""`` means "no config file" (mypy's ``--config-file=``).
    """
    found: str | None = None
    i = 0
    while i < len(mypy_argv):
        arg = mypy_argv[i]
        i += 1
        if arg == "--":
            break
        if arg == "--config-file":
            if i < len(mypy_argv):
                found = mypy_argv[i]
                i += 1
        elif arg.startswith("--config-file="):
            found = arg[len("--config-file=") :]
    return found


# --------------------------------------------------------------------------- files


def _toml_load(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        try:
            import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(
                f"{path}: cannot read TOML on Python {sys.version_info[0]}.{sys.version_info[1]}"
                " without the 'tomli' package; pip install tomli"
            ) from None
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {_one_line(str(e))}") from None
    return data


def _ini_load(path: str) -> Any:  # configparser.RawConfigParser, imported lazily
    import configparser

    # No DEFAULT section: its keys would otherwise show up in [metastore] as unknown keys.
    parser = configparser.RawConfigParser(default_section="\0 no default section")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid ini file: {_one_line(str(e))}") from None
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _is_toml(path: str) -> bool:
    return path.lower().endswith(".toml")


class _File:
    """A parsed candidate config file, read at most once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.toml = _is_toml(path)
        self._data: Any = None

    @property
    def data(self) -> Any:
        if self._data is None:
            self._data = _toml_load(self.path) if self.toml else _ini_load(self.path)
        return self._data

    def has_section(self, name: str) -> bool:
        if self.toml:
            tool = self.data.get("tool")
            return isinstance(tool, dict) and name in tool
        return bool(self.data.has_section(name))

    @property
    def our_label(self) -> str:
        return "[tool.metastore]" if self.toml else "[metastore]"

    def ours(self) -> dict[str, object] | None:
        """Our section as ``{key: raw value}``, or None if the file has none."""
        if not self.has_section("metastore"):
            return None
        if self.toml:
            section = self.data["tool"]["metastore"]
            if not isinstance(section, dict):
                raise ConfigError(f"{self.path}: [tool.metastore] must be a table")
            return dict(section)
        return dict(self.data.items("metastore"))


def _user_config_files(environ: Mapping[str, str]) -> list[str]:
    # Mirrors mypy/defaults.py USER_CONFIG_FILES (computed there from os.environ at import).
    files = ["~/.config/mypy/config", "~/.mypy.ini"]
    if environ.get("XDG_CONFIG_HOME"):
        files.insert(0, os.path.join(environ["XDG_CONFIG_HOME"], "mypy/config"))
    return [_expanduser(f, environ) for f in files]


def find_config_file(
    mypy_argv: Sequence[str] = (),
    *,
    environ: Mapping[str, str] = os.environ,
    cwd: str | None = None,
) -> str | None:
    """The absolute path of the config file to read our section from, or None.

    ``--config-file PATH`` / ``--config-file=PATH`` in ``mypy_argv`` wins (relative to
    ``cwd``; ``--config-file=`` disables config files, as in mypy; a missing file gives
    None: mypy itself reports it). Otherwise mypy's own search
    (mypy/config_parser.py ``_find_config_file``, same in mypy 1.20.2 .. 2.4.1): from
    ``cwd`` upwards, in each directory ``mypy.ini``, ``.mypy.ini``, ``pyproject.toml``,
    ``setup.cfg``, stopping after a directory that holds ``.git`` or ``.hg`` (or at the
    file system root); then the user files ``$XDG_CONFIG_HOME/mypy/config``,
    ``~/.config/mypy/config``, ``~/.mypy.ini``. As in mypy, ``mypy.ini``/``.mypy.ini``
    always count and ``pyproject.toml``/``setup.cfg`` count only with a mypy section;
    unlike mypy, they also count with our own section (so a project whose mypy settings
    live elsewhere, or nowhere, can still configure the store).

    Raises ConfigError if a candidate that must be inspected cannot be parsed.
    """
    return _find(mypy_argv, environ=environ, cwd=cwd)[0]


def _find(
    mypy_argv: Sequence[str], *, environ: Mapping[str, str], cwd: str | None
) -> tuple[str | None, _File | None]:
    here = os.path.abspath(cwd if cwd is not None else os.getcwd())
    explicit = _config_file_from_argv(mypy_argv)
    if explicit is not None:
        if not explicit:
            return None, None
        path = _abspath(explicit, here, environ)
        if not os.path.isfile(path):
            return None, None
        return path, _File(path)

    current = here
    while True:
        for name in _MYPY_CONFIG_NAMES + _MYPY_SHARED_CONFIG_NAMES:
            path = os.path.join(current, name)
            if not os.path.isfile(path):
                continue
            f = _File(path)
            if name in _MYPY_CONFIG_NAMES:
                return path, f
            if f.has_section("mypy") or f.has_section("metastore"):
                return path, f
        if any(os.path.exists(os.path.join(current, m)) for m in _VCS_ROOT_MARKERS):
            break
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent

    for path in _user_config_files(environ):
        if os.path.isfile(path):
            path = os.path.abspath(path)
            return path, _File(path)
    return None, None


def _file_section(
    mypy_argv: Sequence[str], *, environ: Mapping[str, str], cwd: str | None
) -> tuple[_File, dict[str, object]] | None:
    """Our section from the file mypy would use (see find_config_file).

    If that file is a project ini file (mypy.ini, .mypy.ini, setup.cfg, or an ini file
    given with --config-file) without a [metastore] section, a pyproject.toml in the same
    directory with [tool.metastore] is used instead.
    """
    path, f = _find(mypy_argv, environ=environ, cwd=cwd)
    if path is None or f is None:
        return None
    section = f.ours()
    if section is not None:
        return f, section
    if f.toml or path in _user_config_files(environ):
        return None
    sibling = os.path.join(os.path.dirname(path), "pyproject.toml")
    if os.path.isfile(sibling):
        g = _File(sibling)
        section = g.ours()
        if section is not None:
            return g, section
    return None


# --------------------------------------------------------------------------- values


def _parse_bool(raw: object, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ConfigError(f"{where} = {raw!r}: {_BOOL_HELP}")


def _parse_path(raw: object, where: str, base_dir: str, environ: Mapping[str, str]) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{where} = {raw!r}: expected a path (a string)")
    path = raw.strip()
    if not path:
        raise ConfigError(f"{where} = {raw!r}: expected a non-empty path")
    # realpath, not normpath: ".." after a symlinked directory must go up from its target.
    return os.path.realpath(os.path.join(base_dir, _expanduser(path, environ)))


def split_base(spec: str) -> tuple[str, bool]:
    """``(path, immutable)`` of a base as held in :attr:`Config.bases`."""
    path, sep, flag = spec.rpartition(IMMUTABLE_SUFFIX)
    if sep and flag.strip().lower() in _TRUE | _FALSE:
        return path, flag.strip().lower() in _TRUE
    return spec, False


def _parse_base(raw: object, where: str, base_dir: str, environ: Mapping[str, str]) -> str:
    """A base path, with ``?immutable=1`` kept (normalised) when given and true."""
    if isinstance(raw, str):
        path, sep, flag = raw.rpartition(IMMUTABLE_SUFFIX)
        if sep:
            if _parse_bool(flag, f"{where} = {raw!r}: ?immutable"):
                return _parse_path(path, where, base_dir, environ) + IMMUTABLE_SUFFIX + "1"
            return _parse_path(path, where, base_dir, environ)
    return _parse_path(raw, where, base_dir, environ)


def _parse_paths(
    items: Iterable[object], where: str, base_dir: str, environ: Mapping[str, str]
) -> tuple[str, ...]:
    return tuple(_parse_base(item, where, base_dir, environ) for item in items)


def parse_size(raw: object, where: str) -> int:
    """Bytes from ``raw``: an int, or a number with a suffix K/M/G/T (powers of 1024, also
    written KiB, KB, ...); 0 means "no cap". Raises ConfigError."""
    if isinstance(raw, bool):
        raise ConfigError(f"{where} = {raw!r}: expected a size such as 5G, 500M or 0")
    if isinstance(raw, int) and raw >= 0:
        return raw
    if isinstance(raw, str):
        import re

        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", raw.strip().lower())
        if m:
            return int(float(m[1]) * _SIZE_UNITS[m[2]])
    raise ConfigError(f"{where} = {raw!r}: expected a size such as 5G, 500M or 0 (no cap)")


def _split_ini_list(raw: str) -> list[str]:
    return [part.strip() for line in raw.splitlines() for part in line.split(",") if part.strip()]


# --------------------------------------------------------------------------- loading


def load_config(
    flags: Mapping[str, object] = {},
    *,
    mypy_argv: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
    cwd: str | None = None,
) -> Config:
    """Resolve the effective configuration.

    ``flags`` is the first result of :func:`split_argv` (keys ``enabled``, ``store``,
    ``bases``, ``stats``); ``mypy_argv`` is used only to find ``--config-file``;
    ``cwd`` defaults to the current directory. Precedence, lowest to highest:
    default < file < environment < flags. An environment variable set to the empty
    string counts as unset. Defaults: enabled=False, store=:func:`default_store_path`,
    bases=(), stats=False.

    Raises ConfigError (one line) for an unreadable or invalid file, an unknown key in
    our file section, a bad value anywhere, or an unknown key in ``flags``.
    """
    here = os.path.abspath(cwd if cwd is not None else os.getcwd())

    enabled: Setting[bool] = Setting(False, "default")
    store: Setting[str] = Setting(default_store_path(environ), "default")
    bases: Setting[tuple[str, ...]] = Setting((), "default")
    stats: Setting[bool] = Setting(False, "default")
    max_size: Setting[int] = Setting(DEFAULT_MAX_SIZE, "default")
    copy_hits: Setting[bool] = Setting(False, "default")
    verify_bases: Setting[bool] = Setting(True, "default")
    config_file: str | None = None

    # -- file
    found = _file_section(mypy_argv, environ=environ, cwd=here)
    if found is not None:
        f, section = found
        config_file = f.path
        label = f.our_label
        source = f"{f.path} {label}"
        file_dir = os.path.dirname(f.path)
        unknown = sorted(k for k in section if k not in CONFIG_KEYS)
        if unknown:
            raise ConfigError(
                f"{f.path}: {label}: unknown key {unknown[0]!r}; "
                f"valid keys: {', '.join(CONFIG_KEYS)}"
            )

        def where(key: str) -> str:
            return f"{f.path}: {label} {key}"

        if "enabled" in section:
            enabled = Setting(_parse_bool(section["enabled"], where("enabled")), source)
        if "stats" in section:
            stats = Setting(_parse_bool(section["stats"], where("stats")), source)
        if "copy_hits" in section:
            copy_hits = Setting(_parse_bool(section["copy_hits"], where("copy_hits")), source)
        if "verify_bases" in section:
            verify_bases = Setting(_parse_bool(section["verify_bases"], where("verify_bases")),
                                   source)
        if "max_size" in section:
            max_size = Setting(parse_size(section["max_size"], where("max_size")), source)
        if "store" in section:
            path = _parse_path(section["store"], where("store"), file_dir, environ)
            store = Setting(path, source)
        if "bases" in section:
            raw = section["bases"]
            items: list[object]
            if f.toml:
                if not isinstance(raw, list):
                    raise ConfigError(f"{where('bases')} = {raw!r}: expected a list of paths")
                items = list(raw)
            else:
                assert isinstance(raw, str)
                items = list(_split_ini_list(raw))
            bases = Setting(_parse_paths(items, where("bases"), file_dir, environ), source)

    # -- environment
    def env(name: str) -> str | None:
        value = environ.get(name)
        return value if value else None

    if (v := env(ENV_ENABLED)) is not None:
        enabled = Setting(_parse_bool(v, f"env {ENV_ENABLED}"), f"env {ENV_ENABLED}")
    if (v := env(ENV_STATS)) is not None:
        stats = Setting(_parse_bool(v, f"env {ENV_STATS}"), f"env {ENV_STATS}")
    if (v := env(ENV_COPY_HITS)) is not None:
        copy_hits = Setting(_parse_bool(v, f"env {ENV_COPY_HITS}"), f"env {ENV_COPY_HITS}")
    if (v := env(ENV_VERIFY_BASES)) is not None:
        verify_bases = Setting(_parse_bool(v, f"env {ENV_VERIFY_BASES}"),
                               f"env {ENV_VERIFY_BASES}")
    if (v := env(ENV_MAX_SIZE)) is not None:
        max_size = Setting(parse_size(v, f"env {ENV_MAX_SIZE}"), f"env {ENV_MAX_SIZE}")
    if (v := env(ENV_STORE)) is not None:
        store = Setting(_parse_path(v, f"env {ENV_STORE}", here, environ), f"env {ENV_STORE}")
    if (v := env(ENV_BASES)) is not None:
        parts = [p for p in v.split(os.pathsep) if p.strip()]
        bases = Setting(_parse_paths(parts, f"env {ENV_BASES}", here, environ), f"env {ENV_BASES}")

    # -- flags
    unknown_flags = sorted(k for k in flags if k not in CONFIG_KEYS)
    if unknown_flags:
        raise ConfigError(
            f"unknown flag key {unknown_flags[0]!r}; valid keys: {', '.join(CONFIG_KEYS)}"
        )

    def flag(key: str) -> str:
        return f"flag {_FLAG_OF_KEY[key]}"

    if "enabled" in flags:
        enabled = Setting(_parse_bool(flags["enabled"], flag("enabled")), flag("enabled"))
    if "stats" in flags:
        stats = Setting(_parse_bool(flags["stats"], flag("stats")), flag("stats"))
    if "store" in flags:
        store = Setting(_parse_path(flags["store"], flag("store"), here, environ), flag("store"))
    if "bases" in flags:
        raw_bases = flags["bases"]
        if isinstance(raw_bases, str) or not isinstance(raw_bases, Sequence):
            raise ConfigError(f"{flag('bases')} = {raw_bases!r}: expected a list of paths")
        bases = Setting(_parse_paths(raw_bases, flag("bases"), here, environ), flag("bases"))

    return Config(enabled=enabled, store=store, bases=bases, stats=stats, config_file=config_file,
                  max_size=max_size, copy_hits=copy_hits, verify_bases=verify_bases)


def export_to_environ(config: Config, environ: MutableMapping[str, str]) -> None:
    """Write ``config`` into ``environ`` so that child processes resolve the same values.

    Sets MYPY_METASTORE (1/0), MYPY_METASTORE_STORE (absolute), MYPY_METASTORE_BASES
    (os.pathsep-joined absolute paths; empty for none, which reads back as "unset" and so
    as the same file/default value) and MYPY_METASTORE_STATS (1/0). Environment variables
    outrank files, so a child's :func:`load_config` reproduces ``config`` exactly.
    """
    environ[ENV_ENABLED] = "1" if config.enabled.value else "0"
    environ[ENV_STORE] = os.path.abspath(config.store.value)
    environ[ENV_BASES] = os.pathsep.join(os.path.abspath(b) for b in config.bases.value)
    environ[ENV_STATS] = "1" if config.stats.value else "0"
    environ[ENV_MAX_SIZE] = str(config.max_size.value)
    environ[ENV_COPY_HITS] = "1" if config.copy_hits.value else "0"
    environ[ENV_VERIFY_BASES] = "1" if config.verify_bases.value else "0"


def describe(config: Config) -> list[tuple[str, str, str]]:
    """``(key, shown value, source)`` for each setting, in CONFIG_KEYS order."""

    def show(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ", ".join(value) if value else "(none)"
        return str(value)

    settings: dict[str, Setting[Any]] = {
        "enabled": config.enabled,
        "store": config.store,
        "bases": config.bases,
        "stats": config.stats,
        "max_size": config.max_size,
        "copy_hits": config.copy_hits,
        "verify_bases": config.verify_bases,
    }
    return [(k, show(s.value), s.source) for k, s in settings.items()]

