"""Activation of the store in processes that did not start through the drop-in.

Called by the startup hook when a process first imports the ``mypy`` package. Three cases:

- a parallel worker (or any mypy) started by ``mypy-metastore``: the drop-in exported
  ``MYPY_METASTORE=1`` and the store settings in the environment;
- plain ``mypy`` in a project whose configuration says ``enabled = true``;
- anything else: nothing happens.
"""

from __future__ import annotations

import os
import sys

from metastore.config import ConfigError, expand_argfiles, load_config


def _is_mypy_cli() -> bool:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return argv0 in ("mypy", "mypy.exe") or sys.argv[0].endswith(
        os.path.join("mypy", "__main__.py"))


def _in_dropin() -> bool:
    """True in the ``mypy-metastore`` process itself, which installs the store on its own."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    dropin = "metastore.seams.dropin"
    return dropin in sys.modules or getattr(spec, "name", "") == dropin


def activate() -> None:
    """Install the store in this process if the environment or the configuration asks for it.

    Prints one line and leaves mypy alone on a configuration or version problem.
    """
    if os.environ.get("MYPY_METASTORE") == "0" or _in_dropin():
        return
    from_environment = os.environ.get("MYPY_METASTORE") == "1"
    try:
        # --config-file may sit in an @file argument list (mypy expands those itself).
        mypy_argv = expand_argfiles(sys.argv[1:]) if _is_mypy_cli() else []
        config = load_config(mypy_argv=mypy_argv)
    except ConfigError as e:
        if from_environment or _is_mypy_cli():
            sys.stderr.write(f"mypy-metastore: {e}; running mypy without the store\n")
        return
    if not config.enabled.value:
        return
    from metastore.mypy.compat import unsupported_reason

    reason = unsupported_reason()
    if reason is not None:
        sys.stderr.write(f"mypy-metastore: {reason}\n")
        return
    if not from_environment:
        from metastore.config import export_to_environ

        export_to_environ(config, os.environ)
        if _is_mypy_cli() and "--sqlite-cache" not in sys.argv:
            sys.argv.append("--sqlite-cache")  # mypy 1.20 defaults to the file cache
    from metastore.seams.sql import install

    install(config)
