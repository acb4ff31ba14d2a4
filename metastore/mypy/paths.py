"""Portable paths: absolute paths under named roots, stored as root tokens.

mypy records the path of every module it checks: relative to the current directory for
most project files, absolute for site-packages, the typeshed bundled with mypy, and any
file it was given in absolute form. An absolute path ties a cache entry to one checkout
or one virtual environment. Here such a path is written as a *token*: a root name
between NUL characters followed by the path relative to that root
(``"\\0pkg0\\0requests/api.py"``). NUL cannot occur in a file name, so a token can never
be confused with a real path, and resolving it against the roots of the current run
gives the path mypy uses there.

Relative paths are left alone: they are already relative to the current directory and
mean the same thing in every checkout. Absolute paths under no root are left alone too:
such an entry only ever matches the very same path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from metastore.store.api import digest

_MARK = "\0"
#: A token as it can appear inside an encoded entry: raw (fixed format) or JSON-escaped.
_TOKEN_IN_BYTES = re.compile(rb"(?:\x00|\\u0000)[A-Za-z_]+[0-9]*(?:\x00|\\u0000)")


class Root(NamedTuple):
    """A named directory whose absolute path may differ between runs."""

    name: str
    path: str  # absolute, normalised, without a trailing separator


class Roots:
    """The roots of one mypy run, most specific first."""

    def __init__(self, roots: Iterable[Root]) -> None:
        unique: dict[str, Root] = {}
        for root in roots:
            if root.path and root.path not in {r.path for r in unique.values()}:
                unique.setdefault(root.name, root)
        # The longest root wins: a venv inside the checkout is a venv, not project files.
        self._roots = sorted(unique.values(), key=lambda r: len(r.path), reverse=True)
        self._by_name = {r.name: r for r in self._roots}
        self._needles = tuple(r.path.encode("utf-8", "surrogateescape") for r in self._roots)
        self._fingerprint: str | None = None

    @classmethod
    def from_dirs(cls, named: Iterable[tuple[str, str]]) -> Roots:
        """Build roots from ``(name, directory)`` pairs; relative or empty dirs are skipped."""
        roots = []
        for name, directory in named:
            if directory and os.path.isabs(directory):
                path = os.path.normpath(directory)
                if path != os.sep:
                    roots.append(Root(name, path))
        return cls(roots)

    @property
    def roots(self) -> Sequence[Root]:
        return self._roots

    def fingerprint(self) -> str:
        """A digest of every root's name and absolute path (hex)."""
        if self._fingerprint is None:
            text = "\n".join(
                f"{r.name}={r.path}" for r in sorted(self._roots, key=lambda r: r.name))
            self._fingerprint = digest(text.encode("utf-8", "surrogateescape")).hex()[:32]
        return self._fingerprint

    def tokenize(self, path: str) -> str:
        """Return ``path`` with its root replaced by a token, or unchanged.

        Only absolute paths strictly below a root are tokenised.
        """
        if not os.path.isabs(path):
            return path
        for root in self._roots:
            prefix = root.path + os.sep
            if path.startswith(prefix):
                return f"{_MARK}{root.name}{_MARK}{path[len(prefix):]}"
        return path

    def resolve(self, stored: str) -> str | None:
        """Return the path a stored (possibly tokenised) path means in this run.

        Returns None when the token names a root this run does not have.
        """
        if not stored.startswith(_MARK):
            return stored
        name, _, rest = stored[1:].partition(_MARK)
        root = self._by_name.get(name)
        if root is None:
            return None
        return root.path + os.sep + rest

    @staticmethod
    def root_name(stored: str) -> str | None:
        """The name of the root a stored path is tokenised under; None if it is not a token."""
        if not stored.startswith(_MARK):
            return None
        return stored[1:].partition(_MARK)[0]

    def paths_by_name(self) -> dict[str, str]:
        """{root name: absolute path} of this run's roots."""
        return {r.name: r.path for r in self._roots}

    @staticmethod
    def may_hold_tokens(blob: bytes) -> bool:
        """False if ``blob`` (an encoded entry) certainly holds no tokenised path, so that
        resolving its paths would change nothing; True if it might."""
        return _TOKEN_IN_BYTES.search(blob) is not None

    def mentions_any(self, blobs: Iterable[bytes]) -> bool:
        """True if any root's absolute path occurs anywhere in ``blobs``.

        Used after tokenising the fields we understand: a remaining occurrence means the
        entry depends on where the roots are, so it must not be offered elsewhere.
        """
        for blob in blobs:
            for needle in self._needles:
                if needle in blob:
                    return True
        return False

