"""The developers' log: ``MYPY_METASTORE_DEBUG_LOG=FILE`` appends a line per decision."""

from __future__ import annotations

import os

DEBUG = os.environ.get("MYPY_METASTORE_DEBUG_LOG", "")


def debug(message: str) -> None:
    """Append a line to the file named by ``MYPY_METASTORE_DEBUG_LOG`` (developers only)."""
    with open(DEBUG, "a") as f:
        f.write(f"{os.getpid()} {message}\n")
