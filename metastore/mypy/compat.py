"""Which mypy versions the store supports, decided without importing mypy's build code."""

from __future__ import annotations

import os
import re
import sys

_DIST_INFO = re.compile(r"^mypy-([0-9][^-]*)\.dist-info$", re.IGNORECASE)

#: (major, minor) pairs whose cache layout and staleness rules we implement. Staleness
#: before 1.19 relied on data-file mtimes, which a content-keyed store cannot honour.
SUPPORTED: tuple[tuple[int, int], ...] = ((1, 20), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4))
SUPPORTED_TEXT = "1.20.x and 2.0-2.4"


def mypy_version() -> str | None:
    """The installed mypy's version string, or None if mypy is not installed.

    Read from the ``mypy-<version>.dist-info`` directory beside the ``mypy`` package that
    ``import mypy`` would load (a directory listing: ``importlib.metadata`` costs about
    10 ms to import, paid on every run); falls back to ``importlib.metadata`` when that
    directory is not unambiguous (a source checkout on ``sys.path``, stale dist-infos).
    """
    for entry in sys.path:
        directory = entry or os.getcwd()
        if not os.path.isdir(os.path.join(directory, "mypy")):
            continue
        try:
            names = os.listdir(directory)
        except OSError:
            break
        versions = [m.group(1) for m in map(_DIST_INFO.match, names) if m is not None]
        if len(versions) == 1:
            return versions[0]
        break
    from importlib import metadata

    try:
        return metadata.version("mypy")
    except metadata.PackageNotFoundError:
        return None


def parse_major_minor(version: str) -> tuple[int, int] | None:
    """``"2.4.1+dev.abc"`` -> ``(2, 4)``; None if the string is not a version."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def unsupported_reason(version: str | None = None) -> str | None:
    """One line saying why the store cannot be used with this mypy, or None if it can.

    ``version`` defaults to the installed mypy's version.
    """
    if version is None:
        version = mypy_version()
    if version is None:
        return "mypy is not installed; install it with: pip install 'mypy>=1.20,<2.5'"
    parsed = parse_major_minor(version)
    if parsed not in SUPPORTED:
        return (
            f"mypy {version} is not supported (supported: {SUPPORTED_TEXT}); "
            "running mypy without the store. Fix: pip install 'mypy>=1.20,<2.5'"
        )
    return None
