"""Where settings come from besides the defaults: mypy's argv (our flags, ``@argfiles``,
``--config-file``) and the configuration file mypy would read (our section in it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from metastore.config.keys import (
    ConfigError, FLAGS, _FLAG_PREFIX, _MYPY_CONFIG_NAMES, _MYPY_SHARED_CONFIG_NAMES,
    _VCS_ROOT_MARKERS, _abspath, _expanduser)


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


