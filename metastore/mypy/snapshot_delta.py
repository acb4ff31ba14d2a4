"""Delta run snapshots: what changed since a full snapshot, so that a build after an edit
writes a few records instead of the whole snapshot.

A full snapshot (:func:`metastore.mypy.run_snapshot.encode`) is written under a slot of its
own (one of two per checkout, alternately: :func:`base_slot`); the checkout's slot holds a
*delta* naming that slot and checksum, with the records that differ from the base (by stem,
encoded as a snapshot of their own), the stems of the records removed, and the dependencies
of the records it holds by stem (the base's records are not in its encoding). Deltas are
cumulative - each is on the full snapshot, never on another delta - so reading one costs
decoding the base and the delta, whatever the number of builds since the base was written.
A delta that grows past a fraction of its base (:func:`changes`) is replaced by a
new full snapshot. A delta whose base slot is gone or holds another checksum reads as no
snapshot: it is never applied to another base.

Applying a delta (:func:`apply`) keeps the base's columns: a replaced record takes the
base record's place, an added one goes at the end, and the columns are concatenated by
runs of consecutive records, so its cost is that of the delta plus a few copies.

Knows nothing of mypy or SQLite: bytes in, bytes out.
"""

from __future__ import annotations

import json
import struct
from bisect import bisect_left
from array import array
from collections.abc import Iterable, Mapping, Sequence

import blake3

from metastore.mypy.run_snapshot import (
    _EX_ROOTED, _INTS, _TEXT_FIELDS, Record, Snapshot, _LENGTH, decode, encode)

DELTA_MAGIC = b"mypy-metastore delta run snapshot 2\n"
_CHECKSUM_SIZE = 32
#: A delta holding more records than this fraction of its base is written as a full
#: snapshot instead.
COMPACT_FRACTION = 4


def base_slot(checkout_slot: bytes, replacing: bytes | None = None) -> bytes:
    """The slot a checkout (its delta's slot ``checkout_slot``) writes a full snapshot
    under: one of two, the one that is not ``replacing`` (the base of the delta read), so
    that a run still reading the base its delta was on finds it - or, if two compactions
    came in between, a base of another checksum, which it refuses."""
    first, second = (blake3.blake3(b"\0full-run-snapshot-2\0" + checkout_slot + half).digest()
                     for half in (b"0", b"1"))
    return second if replacing == first else first


class Delta:
    """A decoded delta: ``base_key``, ``base_checksum``, its own ``checksum``, the
    ``removed`` stems, the ``records`` that replace or add (a :class:`Snapshot`, whose roots,
    layers and options are the delta's) and their dependencies by stem (``deps``, in the
    order of ``records``)."""

    __slots__ = ("base_key", "base_checksum", "checksum", "removed", "records", "deps")

    def __init__(self, base_key: bytes, base_checksum: bytes, checksum: bytes,
                 removed: list[str], records: Snapshot, deps: list[list[str]]) -> None:
        self.base_key = base_key
        self.base_checksum = base_checksum
        self.checksum = checksum
        self.removed = removed
        self.records = records
        self.deps = deps


def encode_delta(base_key: bytes, base_checksum: bytes, roots: Mapping[str, str],
                 layers: str, records: Iterable[Record], removed: Iterable[str], *,
                 options: str = "") -> bytes:
    """Deterministic bytes for a delta on the full snapshot in slot ``base_key``."""
    ordered = sorted(records, key=lambda r: r.stem)
    inner = encode(roots, layers, ordered, options=options)
    header = json.dumps({"removed": sorted(set(removed)),
                         "deps": [sorted(set(r.deps)) for r in ordered]},
                        separators=(",", ":"), sort_keys=True).encode()
    body = b"".join([base_key, base_checksum, _LENGTH.pack(len(header)), header, inner])
    return DELTA_MAGIC + blake3.blake3(body).digest() + body


def decode_delta(data: bytes) -> Delta | None:
    """The delta in ``data``; None if it is not one."""
    try:
        if not data.startswith(DELTA_MAGIC):
            return None
        start = len(DELTA_MAGIC) + _CHECKSUM_SIZE
        checksum = data[len(DELTA_MAGIC): start]
        if blake3.blake3(data[start:]).digest() != checksum:
            return None
        base_key, base_checksum = data[start: start + 32], data[start + 32: start + 64]
        (length,) = _LENGTH.unpack_from(data, start + 64)
        at = start + 64 + _LENGTH.size
        header = json.loads(data[at: at + length])
        removed, deps = header["removed"], header["deps"]
        records = decode(data[at + length:])
        if not (records is not None and len(base_key) == len(base_checksum) == 32
                and type(removed) is list and all(type(s) is str for s in removed)
                and type(deps) is list and len(deps) == len(records)
                and all(type(ds) is list and all(type(d) is str for d in ds)
                        for ds in deps)):
            return None
        return Delta(base_key, base_checksum, checksum, removed, records, deps)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, struct.error):
        return None


def apply(base: Snapshot, delta: Delta) -> Snapshot | None:
    """The snapshot ``delta`` makes of ``base`` (a new object; ``base`` is unchanged), with
    the delta's checksum; None if the delta is not on this base."""
    if delta.base_checksum != base.checksum or not base.checksum:
        return None
    d = delta.records
    position = {stem: i for i, stem in enumerate(base.stems)}
    order: list[tuple[Snapshot, int]] = [(base, i) for i in range(len(base))]
    for k, stem in enumerate(d.stems):
        i = position.get(stem)
        if i is None:
            order.append((d, k))
        else:
            order[i] = (d, k)
    removed = set(delta.removed).difference(d.stems)
    remap: array[int] | None = None
    if removed:
        order = [(s, i) for s, i in order if s is d or base.stems[i] not in removed]
    new_index = {source.stems[i]: n for n, (source, i) in enumerate(order)} \
        if removed or len(d) else {}
    if removed:
        remap = array("q", [new_index.get(stem, -1) for stem in base.stems])
    # Runs of consecutive records of one source: (source, first, end).
    runs: list[tuple[Snapshot, int, int]] = []
    for source, i in order:
        if runs and runs[-1][0] is source and runs[-1][2] == i:
            runs[-1] = (source, runs[-1][1], i + 1)
        else:
            runs.append((source, i, i + 1))
    stems: list[str] = []
    modules: list[str] = []
    paths: list[str] = []
    ints = array("q")
    text_index = array("I")
    keys: list[bytes] = []
    flags: list[bytes] = []
    metas: list[bytes] = []
    exs: list[bytes] = []
    meta_offsets, ex_offsets, dep_offsets = array("I", [0]), array("I", [0]), array("I", [0])
    deps = array("I")
    text_shift = len(base._texts)
    for source, a, b in runs:
        stems += source.stems[a:b]
        modules += source.modules[a:b]
        paths += source.paths[a:b]
        keys.append(source._keys[32 * a: 32 * b])
        ints += source.ints[_INTS * a: _INTS * b]
        flags.append(source.flags[a:b])
        indices = source._text_index[_TEXT_FIELDS * a: _TEXT_FIELDS * b]
        text_index += indices if source is base else array(
            "I", [t + text_shift for t in indices])
        _concat(metas, meta_offsets, source._metas, source._meta_offsets, a, b)
        _concat(exs, ex_offsets, source._exs, source._ex_offsets, a, b)
        if source is base:
            offs = base._dep_offsets
            values = base._deps[offs[a]: offs[b]]
            ends = [o - offs[a] for o in offs[a + 1: b + 1]]
            if remap is not None:  # indices after the removed records, and those left out
                mapped = [remap[j] for j in values]
                gone = [k for k, v in enumerate(mapped) if v < 0]
                values = array("I", [v for v in mapped if v >= 0])
                if gone:
                    ends = [end - bisect_left(gone, end) for end in ends]
            deps += values
            shift = dep_offsets[-1]
            dep_offsets += array("I", [end + shift for end in ends])
            continue
        get = new_index.get
        for i in range(a, b):  # the delta's records: their dependencies by stem
            deps += array("I", sorted({at for s in delta.deps[i] if (at := get(s)) is not None}))
            dep_offsets.append(len(deps))
    merged = Snapshot.__new__(Snapshot)
    merged.roots = merged.served_roots = d.roots
    merged.checksum = delta.checksum
    merged.layers, merged.options = d.layers, d.options
    merged.untrusted = sum(1 for size in ints[0::_INTS] if size < 0)
    merged.stems, merged.modules, merged.paths = stems, modules, paths
    merged._keys, merged.ints, merged.flags = b"".join(keys), ints, b"".join(flags)
    merged._texts = base._texts + d._texts
    merged._text_index = text_index
    merged._dep_offsets, merged._deps = dep_offsets, deps
    merged._meta_offsets, merged._metas = meta_offsets, b"".join(metas)
    merged._ex_offsets, merged._exs = ex_offsets, b"".join(exs)
    return merged


def _concat(chunks: list[bytes], offsets: array[int], data: bytes, source: array[int],
            a: int, b: int) -> None:
    """Append records ``a`` to ``b`` of a blob column and their end offsets."""
    chunks.append(data[source[a]: source[b]])
    shift = offsets[-1] - source[a]
    offsets += array("I", [o + shift for o in source[a + 1: b + 1]])


def changes(base: Snapshot, records: Sequence[Record]
            ) -> tuple[list[Record], list[str]] | None:
    """The records of ``records`` that differ from ``base`` (or are not in it) and the
    stems of ``base`` not among them: what a delta holds to make ``base`` a snapshot equal,
    record for record, to one encoded from ``records``; None if that is more than
    1/:data:`COMPACT_FRACTION` of the base (a full snapshot is written instead)."""
    position = {stem: i for i, stem in enumerate(base.stems)}
    stems = {r.stem for r in records}
    removed = [stem for stem in base.stems if stem not in stems]
    budget = len(base) // COMPACT_FRACTION - len(removed)
    if budget < 0:
        return None
    changed = []
    ints, flags, metas, exs = base.ints, base.flags, base._metas, base._exs
    meta_offsets, ex_offsets = base._meta_offsets, base._ex_offsets
    base_stems = base.stems
    for r in records:
        i = position.get(r.stem)
        if i is not None:
            j = _INTS * i
            if (r.meta == metas[meta_offsets[i]: meta_offsets[i + 1]]
                    and r.ex == exs[ex_offsets[i]: ex_offsets[i + 1]]
                    and r.signature == (ints[j], ints[j + 1], ints[j + 2], ints[j + 3])
                    and r.layer == ints[j + 4] and r.seq == ints[j + 5]
                    and r.key == base.key(i).hex() and r.path == base.paths[i]
                    and r.module == base.modules[i]
                    and r.ex_rooted == bool(flags[i] & _EX_ROOTED)
                    and r.unit == base.unit(i)):
                old_deps = tuple([base_stems[d] for d in base.deps(i)])
                if old_deps == r.deps or (
                        stems.intersection(old_deps) == stems.intersection(r.deps)):
                    continue
        changed.append(r)
        budget -= 1
        if budget < 0:
            return None
    return changed, removed
