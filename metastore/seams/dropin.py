"""The drop-in command ``mypy-metastore``: mypy's argv plus ``--metastore-*`` flags.

``mypy-metastore ARGS`` behaves exactly like ``mypy ARGS`` (same output, same exit
status) except that mypy's cache goes through the store. ``@file`` argument lists are
expanded first (as mypy's own parser would), so ``--metastore-*`` flags may also come
from a file; they are removed before mypy sees argv. With the store active,
``--skip-cache-mtime-checks`` (which Pants passes) is dropped: see
:func:`_without_skip_mtime_checks`. Any problem with the store prints ONE line on stderr
starting ``mypy-metastore: `` and mypy then runs without the store; only an unknown or
malformed ``--metastore-*`` flag is a usage error (exit status 2, like mypy's own).

Also runnable as ``python -m metastore.seams.dropin``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

from metastore.config import (
    ENV_ENABLED,
    Config,
    ConfigError,
    Setting,
    expand_argfiles,
    export_to_environ,
    load_config,
    split_argv,
)

__all__ = ["main", "prepare"]

PREFIX = "mypy-metastore: "
#: Selects how the drop-in reaches mypy: unset or "seam" (default), or VIA_CACHE_STORE.
ENV_VIA = "MYPY_METASTORE_VIA"
VIA_CACHE_STORE = "cache-store"
CACHE_STORE_FACTORY = "metastore.seams.cache_store:create"
DROPIN_SOURCE = "mypy-metastore (on unless --metastore-off or MYPY_METASTORE=0)"


def _warn(message: str) -> None:
    sys.stderr.write(PREFIX + " ".join(message.split()) + "\n")
    sys.stderr.flush()


def dropin_config(config: Config) -> Config:
    """The drop-in's view of ``config``: the store is on unless a flag or env says otherwise.

    ``enabled`` from the default or a file (which are about plain ``mypy``) is replaced by
    True; ``enabled`` from ``--metastore-off`` or ``MYPY_METASTORE`` is kept.
    """
    source = config.enabled.source
    if source.startswith("flag ") or source.startswith("env "):
        return config
    return config._replace(enabled=Setting(True, DROPIN_SOURCE))


def _with_sqlite_cache(mypy_argv: Sequence[str]) -> list[str]:
    """``mypy_argv`` with ``--sqlite-cache`` added last (before a bare ``--`` if any)."""
    args = list(mypy_argv)
    at = args.index("--") if "--" in args else len(args)
    args.insert(at, "--sqlite-cache")
    return args


_SKIP_MTIME_FLAG = "--skip-cache-mtime-checks"


def _without_skip_mtime_checks(mypy_argv: Sequence[str]) -> list[str]:
    """``mypy_argv`` without ``--skip-cache-mtime-checks`` (or an abbreviation of it that
    mypy's argparse accepts, such as Pants' ``--skip-cache-mtime-check``) before ``--``.

    The flag makes mypy skip one of its own checks: that a meta's data entry exists with
    the mtime the meta recorded (mypy/build.py ``validate_meta``). Pants passes it because
    its sandboxes do not preserve mtimes; with the store the check costs nothing and always
    passes for a complete unit (data entries report the constant mtime their metas were
    stored with, after the store has checked the data is there), so keeping it loses no
    speed and keeps mypy's safety net: should a data entry ever be missing, mypy
    re-checks the module instead of crashing on a tree it cannot load.
    """
    out: list[str] = []
    for i, arg in enumerate(mypy_argv):
        if arg == "--":
            out.extend(mypy_argv[i:])
            break
        if len(arg) >= len("--skip-c") and _SKIP_MTIME_FLAG.startswith(arg):
            continue
        out.append(arg)
    return out


def _via_cache_store(
    mypy_argv: Sequence[str], config: Config, environ: MutableMapping[str, str]
) -> tuple[list[str], Config | None]:
    """``MYPY_METASTORE_VIA=cache-store``: plug the store in through mypy's ``--cache-store``
    option (mypy with ``patches/`` applied) instead of the SQL seam.

    ``MYPY_METASTORE`` is exported as "0", so that no process (this one, mypy's workers)
    installs the seam: the option is the only way in. The factory reads the other settings
    from the exported environment.
    """
    from mypy.options import Options

    if not hasattr(Options(), "cache_store"):
        _warn(f"{ENV_VIA}={VIA_CACHE_STORE} needs a mypy with the --cache-store option "
              "(see patches/); running mypy without the store")
        environ[ENV_ENABLED] = "0"
        return list(mypy_argv), None
    export_to_environ(config, environ)
    environ[ENV_ENABLED] = "0"
    args = list(mypy_argv)
    at = args.index("--") if "--" in args else len(args)
    args[at:at] = ["--cache-store", CACHE_STORE_FACTORY]
    return args, config


def _uses_cache_map(mypy_argv: Sequence[str]) -> bool:
    for arg in mypy_argv:
        if arg == "--":
            return False
        if arg == "--cache-map" or arg.startswith("--cache-map="):
            return True
    return False


def prepare(
    argv: Sequence[str], environ: MutableMapping[str, str] = os.environ
) -> tuple[list[str], Config | None]:
    """Split ``argv``, resolve the configuration and activate the store if possible.

    Returns ``(mypy_argv, config)`` where ``config`` is the active configuration, or None
    if mypy is to run without the store. When the store is active, ``environ`` has been
    updated by :func:`export_to_environ` (so mypy's workers see the same configuration),
    ``metastore.seams.sql.install(config)`` has run, and ``mypy_argv`` ends with
    ``--sqlite-cache`` - or, with ``MYPY_METASTORE_VIA=cache-store`` (a patched mypy), no
    seam is installed and ``mypy_argv`` ends with ``--cache-store`` naming our factory.
    When it is not, ``environ[MYPY_METASTORE]`` is "0" so that neither workers nor the
    startup hook activate it behind our back.

    ``argv`` may hold ``@file`` arguments: they are expanded (see
    :func:`metastore.config.expand_argfiles`) and ``mypy_argv`` holds their contents. With
    the store active, ``--skip-cache-mtime-checks`` is removed from ``mypy_argv`` (see
    :func:`_without_skip_mtime_checks`).

    Raises ConfigError only for bad ``--metastore-*`` flags (see split_argv) and argument
    files that include themselves; every other problem is reported as one line on stderr.
    """
    flags, mypy_argv = split_argv(expand_argfiles(argv))
    try:
        config = dropin_config(load_config(flags, mypy_argv=mypy_argv, environ=environ))
    except ConfigError as e:
        _warn(f"{e}; running mypy without the store")
        environ[ENV_ENABLED] = "0"
        return mypy_argv, None

    if not config.enabled.value:
        export_to_environ(config, environ)
        return mypy_argv, None

    if _uses_cache_map(mypy_argv):
        _warn(
            "--cache-map cannot be used with the store (mypy allows it only without "
            "--sqlite-cache); running mypy without the store"
        )
        environ[ENV_ENABLED] = "0"
        return mypy_argv, None

    try:
        from metastore.mypy import compat

        reason = compat.unsupported_reason()
    except Exception as e:  # an import or environment problem must not stop mypy
        reason = (
            f"cannot check compatibility ({type(e).__name__}: {e}); "
            "running mypy without the store"
        )
    if reason is not None:
        _warn(reason)
        environ[ENV_ENABLED] = "0"
        return mypy_argv, None

    if environ.get(ENV_VIA) == VIA_CACHE_STORE:
        return _via_cache_store(_without_skip_mtime_checks(mypy_argv), config, environ)

    export_to_environ(config, environ)
    try:
        from metastore.seams.sql import install

        install(config)
    except Exception as e:  # a store problem must not stop mypy
        _warn(f"{e or type(e).__name__}; running mypy without the store")
        environ[ENV_ENABLED] = "0"
        return mypy_argv, None
    return _with_sqlite_cache(_without_skip_mtime_checks(mypy_argv)), config


def run_mypy(mypy_argv: Sequence[str]) -> None:
    """Run mypy exactly as its ``mypy`` console script does, with ``mypy_argv``.

    Sets ``sys.argv`` to ``["mypy", *mypy_argv]`` (mypy's ``console_entry`` reads argv
    from there, also in its KeyboardInterrupt and crash paths) and calls
    ``mypy.__main__.console_entry()``, which flushes stdout/stderr, handles BrokenPipe,
    KeyboardInterrupt and internal errors (exit status 2) and leaves the exit status to
    mypy's ``main`` (0 clean, 1 errors, 2 blocking errors / usage). Same code in mypy
    1.20.2 .. 2.4.1. May not return (mypy calls sys.exit / os._exit).
    """
    sys.argv = ["mypy", *mypy_argv]
    from mypy.__main__ import console_entry

    console_entry()


def _options(argv: Sequence[str]) -> list[str]:
    """``argv`` up to a bare ``--`` (after it, arguments are file names)."""
    return list(argv[:argv.index("--")]) if "--" in argv else list(argv)


def _help(args: Sequence[str]) -> None:
    """``-h``/``--help``: mypy's help, then our options (:mod:`metastore.config.help`);
    ``--metastore-help``: ours alone. Exits with mypy's status (0), never opens the store."""
    from metastore.config.help import HELP_FLAG, settings_help

    if HELP_FLAG in _options(args):
        sys.stdout.write(settings_help())
        sys.exit(0)
    mypy_argv = list(args)
    try:
        mypy_argv = split_argv(args)[1]
    except ConfigError:
        pass  # a malformed flag of ours: the help is what was asked for
    try:
        run_mypy(mypy_argv)
    except SystemExit as e:
        if not e.code:
            sys.stdout.write("\n" + settings_help())
            sys.stdout.flush()
        raise


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``mypy-metastore``; ``argv`` defaults to ``sys.argv[1:]``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help", "--metastore-help"} & set(_options(args)):
        _help(args)
    try:
        mypy_argv, config = prepare(args, os.environ)
    except ConfigError as e:
        _warn(f"error: {e}")
        sys.exit(2)
    if config is not None and os.environ.get(ENV_VIA) != VIA_CACHE_STORE:
        from metastore.seams import ahead

        ahead.start(config, mypy_argv)  # checks data blobs while mypy starts up
    run_mypy(mypy_argv)


if __name__ == "__main__":
    main()
