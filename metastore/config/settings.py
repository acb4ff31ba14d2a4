"""The effective configuration: values parsed and checked, the layers merged (defaults <
file < environment < flags), handed to child processes, and described for ``metastore
config``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from metastore.config.keys import (
    CONFIG_KEYS, Config, ConfigError, DEFAULT_MAX_SIZE, ENV_BASES, ENV_COPY_HITS, ENV_ENABLED,
    ENV_MAX_SIZE, ENV_REMOTE, ENV_REMOTE_KEY, ENV_REMOTE_READ_ONLY, ENV_REMOTE_TIMEOUT,
    ENV_STATS, ENV_STORE, ENV_VERIFY_BASES, DEFAULT_REMOTE_TIMEOUT, IMMUTABLE_SUFFIX, Setting,
    _BOOL_HELP, _FALSE, _FLAG_OF_KEY, _SIZE_UNITS, _TRUE, _expanduser, default_store_path,
    mask_url)
from metastore.config.sources import (
    _file_section)


def _parse_url(raw: object, where: str) -> str:
    """A remote URL (empty: none)."""
    if not isinstance(raw, str):
        raise ConfigError(f"{where} = {raw!r}: expected a URL (redis://... or http://...)")
    url = raw.strip()
    if url and url.partition("://")[0].lower() not in ("redis", "rediss", "unix", "http",
                                                       "https"):
        raise ConfigError(f"{where} = {mask_url(url)!r}: expected a redis://, rediss://, "
                          "unix://, http:// or https:// URL")
    return url


def _parse_timeout(raw: object, where: str) -> float:
    try:
        value = float(raw) if isinstance(raw, (int, float, str)) else -1.0
    except ValueError:
        value = -1.0
    if not value > 0 or value > 3600:
        raise ConfigError(f"{where} = {raw!r}: expected a number of seconds (> 0)")
    return value


def _parse_secret(raw: object, where: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string")
    return raw


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
    remote: Setting[str] = Setting("", "default")
    remote_read_only: Setting[bool] = Setting(False, "default")
    remote_key: Setting[str] = Setting("", "default")
    remote_timeout: Setting[float] = Setting(DEFAULT_REMOTE_TIMEOUT, "default")
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
        if "remote" in section:
            remote = Setting(_parse_url(section["remote"], where("remote")), source)
        if "remote_read_only" in section:
            remote_read_only = Setting(
                _parse_bool(section["remote_read_only"], where("remote_read_only")), source)
        if "remote_key" in section:
            remote_key = Setting(_parse_secret(section["remote_key"], where("remote_key")),
                                 source)
        if "remote_timeout" in section:
            remote_timeout = Setting(
                _parse_timeout(section["remote_timeout"], where("remote_timeout")), source)
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
    if (v := env(ENV_REMOTE)) is not None:
        remote = Setting(_parse_url(v, f"env {ENV_REMOTE}"), f"env {ENV_REMOTE}")
    if (v := env(ENV_REMOTE_READ_ONLY)) is not None:
        remote_read_only = Setting(_parse_bool(v, f"env {ENV_REMOTE_READ_ONLY}"),
                                   f"env {ENV_REMOTE_READ_ONLY}")
    if (v := env(ENV_REMOTE_KEY)) is not None:
        remote_key = Setting(v, f"env {ENV_REMOTE_KEY}")
    if (v := env(ENV_REMOTE_TIMEOUT)) is not None:
        remote_timeout = Setting(_parse_timeout(v, f"env {ENV_REMOTE_TIMEOUT}"),
                                 f"env {ENV_REMOTE_TIMEOUT}")
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
    if "remote" in flags:
        remote = Setting(_parse_url(flags["remote"], flag("remote")), flag("remote"))
    if "bases" in flags:
        raw_bases = flags["bases"]
        if isinstance(raw_bases, str) or not isinstance(raw_bases, Sequence):
            raise ConfigError(f"{flag('bases')} = {raw_bases!r}: expected a list of paths")
        bases = Setting(_parse_paths(raw_bases, flag("bases"), here, environ), flag("bases"))

    return Config(enabled=enabled, store=store, bases=bases, stats=stats, config_file=config_file,
                  max_size=max_size, copy_hits=copy_hits, verify_bases=verify_bases,
                  remote=remote, remote_read_only=remote_read_only, remote_key=remote_key,
                  remote_timeout=remote_timeout)


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
    environ[ENV_REMOTE] = config.remote.value
    environ[ENV_REMOTE_READ_ONLY] = "1" if config.remote_read_only.value else "0"
    environ[ENV_REMOTE_KEY] = config.remote_key.value
    environ[ENV_REMOTE_TIMEOUT] = repr(config.remote_timeout.value)


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
        "remote": config.remote,
        "remote_read_only": config.remote_read_only,
        "remote_key": config.remote_key,
        "remote_timeout": config.remote_timeout,
    }
    shown = {k: show(s.value) for k, s in settings.items()}
    # Credentials are never printed: the URL's password, the key itself.
    shown["remote"] = mask_url(config.remote.value) if config.remote.value else "(none)"
    shown["remote_key"] = "***" if config.remote_key.value else "(none)"
    return [(k, shown[k], s.source) for k, s in settings.items()]

