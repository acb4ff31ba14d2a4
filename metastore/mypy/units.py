"""What the mypy layer stores and offers for a module: a unit's manifest, the offer made
to mypy, the unit published in a build, and how module ids, entry stems and options map."""

from __future__ import annotations

import json
import os
from typing import NamedTuple, TypeAlias

from metastore.mypy.cache_codec import canonical_json
from metastore.mypy.source_files import SourceFile

#: The portable run snapshot slot holds this and the key of the snapshot slot it stands for.
SNAPSHOT_POINTER = b"\0snapshot-slot\0"
#: A run snapshot's signature for a file whose stat was too recent to be trusted.
UNTRUSTED_SIGNATURE = (-1, -1, -1, -1)
_IGNORED_OPTIONS = ("local_partial_types", "is_parallel", "debug_cache")


class Manifest(NamedTuple):
    """The small value stored for a unit: where its parts are and what selection needs."""

    path: str  # tokenised path mypy used
    bound: str  # roots fingerprint if the unit only holds at these roots, else ""
    meta: str  # blob digests, hex
    data: str
    ex: str
    ex_part: str  # "meta_ex" (2.x) or "err" (1.20)
    interface_hash: str
    deps: tuple[tuple[str, str], ...]
    options: str
    local_partial_types: bool
    is_parallel: bool

    def encode(self) -> bytes:
        return canonical_json({
            "p": self.path, "b": self.bound, "m": self.meta, "d": self.data, "x": self.ex,
            "xp": self.ex_part, "h": self.interface_hash, "deps": self.deps,
            "o": self.options, "lp": self.local_partial_types, "par": self.is_parallel,
        }).encode()

    @classmethod
    def of_snapshot_unit(cls, unit: tuple[str, str, str, str, str, str, str, str, bool, bool]
                         ) -> Manifest:
        """The manifest a run snapshot records (see :attr:`run_snapshot.Record.unit`), without
        its dependencies."""
        path, bound, meta, data, ex, ex_part, interface_hash, options, lp, par = unit
        # tuple.__new__: a warm run makes one per module; the NamedTuple's __new__ is slower.
        return tuple.__new__(cls, (path, bound, meta, data, ex, ex_part, interface_hash, (),
                                   options, lp, par))

    def snapshot_unit(self) -> tuple[str, str, str, str, str, str, str, str, bool, bool]:
        """This manifest as a run snapshot records it (the inverse of
        :meth:`of_snapshot_unit`)."""
        return (self.path, self.bound, self.meta, self.data, self.ex, self.ex_part,
                self.interface_hash, self.options, self.local_partial_types, self.is_parallel)

    @classmethod
    def decode(cls, value: bytes) -> Manifest | None:
        try:
            raw = json.loads(value)
            return cls(
                path=raw["p"], bound=raw["b"], meta=raw["m"], data=raw["d"], ex=raw["x"],
                ex_part=raw["xp"], interface_hash=raw["h"],
                deps=tuple((str(a), str(b)) for a, b in raw["deps"]), options=raw["o"],
                local_partial_types=bool(raw["lp"]), is_parallel=bool(raw["par"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


#: A module's entry during selection: (path mypy uses, its source, usable candidates as
#: (layer, seq, manifest)), or None if the module cannot be offered.
Candidates: TypeAlias = "tuple[str, SourceFile, list[tuple[int, int, Manifest]]]"
Found: TypeAlias = "Candidates | None"


class Offer(NamedTuple):
    """The unit chosen for one module in this run, patched for the file on disk."""

    stem: str
    path: str  # the path mypy uses
    manifest: Manifest
    mtime: int
    size: int
    layer: int = -1  # where the unit was found (see metastore.store.api.Entry); -1: unknown
    seq: int = -1
    #: The last unit published for the module, offered for an edited file only so that
    #: mypy learns the old interface hash (see :meth:`MypyStore._offer_previous`).
    previous: bool = False
    key: bytes = b""  # the unit's key, where known


class Published(NamedTuple):
    """A unit published in this build, as the run snapshot records it."""

    key: bytes
    manifest: Manifest
    path: str  # the path mypy used
    mtime: int  # of the source file it was checked against
    size: int
    signature: tuple[int, int, int, int]  # that file's, if trusted (see _trusted_signature)

    def encode(self) -> bytes:
        return json.dumps([self.key.hex(), self.manifest.encode().decode(), self.path,
                           self.mtime, self.size, list(self.signature)]).encode()

    @classmethod
    def decode(cls, value: bytes) -> Published | None:
        try:
            key, manifest, path, mtime, size, sig = json.loads(value)
            decoded = Manifest.decode(manifest.encode())
            if decoded is None or len(sig) != 4:
                return None
            return cls(bytes.fromhex(key), decoded, str(path), int(mtime), int(size),
                       (int(sig[0]), int(sig[1]), int(sig[2]), int(sig[3])))
        except (ValueError, TypeError):
            return None


def unit_parts(offer: Offer) -> tuple[str, str, str]:
    """The blob digests of ``offer``'s unit: what makes two offers the same unit."""
    return offer.manifest.meta, offer.manifest.data, offer.manifest.ex


def options_key(options: dict[str, object]) -> str:
    """A meta's per-module options without the fields mypy compares separately."""
    return canonical_json({k: v for k, v in options.items() if k not in _IGNORED_OPTIONS})


def module_id(stem: str) -> str:
    parts = stem.split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stem_for(module: str, path: str) -> str:
    stem = module.replace(".", "/")
    if "__init__." in path and os.path.basename(path).startswith("__init__."):
        stem += "/__init__"
    return stem
