"""Deltas on a run snapshot, so that a run after an edit writes the records that changed
rather than the whole snapshot (see :mod:`metastore.mypy.run_snapshot`).

A checkout's snapshot slot holds a full snapshot or a delta: the slot and checksum of a
full snapshot kept in a slot of its own (named by its checksum, :func:`full_key`) and the
records that are new or replace one of its own (with their dependencies by stem). A run
that leaves out one of the full snapshot's records (a module no longer imported) writes a
full snapshot instead. The first delta on a full snapshot moves that snapshot
to its own slot; deltas are cumulative - each run writes its delta on the same full
snapshot, never a delta on a delta - so reading costs one full decode plus one small one,
however many runs wrote, and a run that finds a full snapshot in the checkout's slot reads
nothing more (no slot that may not exist is asked for: a remote tier would be asked too).
A delta whose full snapshot is gone or is not the one it names is no snapshot. The writer
writes a full snapshot into the checkout's slot instead once the delta would hold more
than a fraction of the records (:func:`compact`); the full snapshot the old deltas were on
then ages out of the store's LRU.

Knows nothing of mypy or SQLite: records in, bytes out.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping

import blake3

from metastore.mypy import run_snapshot

MAGIC = b"mypy-metastore run snapshot delta 2\n"
_LENGTH = struct.Struct("<I")
_DIGEST = 32
#: A delta is written while it holds at most this many records, or this
#: fraction of the full snapshot's records if that is more; past it, a full snapshot.
MIN_RECORDS = 64
FRACTION = 8


def full_key(checksum: bytes) -> bytes:
    """The slot a full snapshot with this checksum is kept in while deltas are on it."""
    return blake3.blake3(b"\0full-snapshot-2\0" + checksum).digest()


def compact(changed: int, full: int) -> bool:
    """True if a delta of ``changed`` records on a full snapshot of ``full`` records is too
    big: write a full snapshot instead."""
    return changed > max(MIN_RECORDS, full // FRACTION)


class Delta:
    """A decoded delta: ``base_key`` and ``base_checksum`` name the full snapshot it applies
    to, ``checksum`` names the result, ``records`` the new and replacing records (a
    :class:`run_snapshot.Snapshot` of their own) and ``deps`` their dependencies (stems),
    in ``records``' order."""

    __slots__ = ("base_key", "base_checksum", "checksum", "records", "deps")

    def __init__(self, base_key: bytes, base_checksum: bytes, checksum: bytes,
                 records: run_snapshot.Snapshot, deps: list[list[str]]) -> None:
        self.base_key = base_key
        self.base_checksum = base_checksum
        self.checksum = checksum
        self.records = records
        self.deps = deps

    def applied(self, full: run_snapshot.Snapshot) -> run_snapshot.Snapshot | None:
        """``full`` with this delta, or None if the delta is not on that snapshot or was
        recorded with other roots, layers or options."""
        records = self.records
        if (full.checksum != self.base_checksum or full.from_delta
                or records.roots != full.roots or records.layers != full.layers
                or records.options != full.options):
            return None
        return full.with_delta(records, self.deps, self.checksum)


def encode(base_checksum: bytes, roots: Mapping[str, str], layers: str,
           records: Iterable[run_snapshot.Record], *, options: str = "") -> bytes:
    """Deterministic bytes for the delta of ``records`` on the full snapshot with checksum
    ``base_checksum`` (kept in slot :func:`full_key` of it)."""
    base_key = full_key(base_checksum)
    ordered = sorted(records, key=lambda r: r.stem)
    inner = run_snapshot.encode(roots, layers, ordered, options=options)
    header = json.dumps({"deps": [sorted(set(r.deps)) for r in ordered]},
                        separators=(",", ":")).encode()
    body = b"".join([base_key, base_checksum, _LENGTH.pack(len(header)), header, inner])
    return run_snapshot.seal(MAGIC, body)


def decode(data: bytes) -> Delta | None:
    """The delta in ``data``; None if it is not one (another format, a checksum that does
    not match, any malformed part)."""
    try:
        sealed = run_snapshot.unseal(data, MAGIC)
        if sealed is None:
            return None
        checksum, start = sealed
        base_key = data[start: start + _DIGEST]
        base_checksum = data[start + _DIGEST: start + 2 * _DIGEST]
        at = start + 2 * _DIGEST
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        header = json.loads(data[at: at + length])
        deps = header["deps"]
        records = run_snapshot.decode(data[at + length:])
        if (records is None or base_key != full_key(base_checksum)
                or type(deps) is not list or len(deps) != len(records)
                or not all(type(ds) is list and all(type(d) is str for d in ds)
                           for ds in deps)
                or len(set(records.stems)) != len(records)):
            return None
        return Delta(base_key, base_checksum, checksum, records, deps)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, struct.error):
        return None


def decode_any(data: bytes, get_slot: Callable[[bytes], tuple[float, bytes] | None]
               ) -> tuple[run_snapshot.Snapshot, tuple[bytes, tuple[float, bytes]] | None] | None:
    """The snapshot in ``data``: a full one (then no other slot), or a delta with the full
    snapshot it is on, read through ``get_slot`` (then that slot, as (key, slot)); None if
    it is neither, or that snapshot is gone or is not the one the delta names."""
    if not data.startswith(MAGIC):
        full = run_snapshot.decode(data)
        return None if full is None else (full, None)
    delta = decode(data)
    if delta is None:
        return None
    slot = get_slot(delta.base_key)
    base = run_snapshot.decode(slot[1]) if slot is not None else None
    applied = delta.applied(base) if base is not None else None
    return None if applied is None or slot is None else (applied, (delta.base_key, slot))
