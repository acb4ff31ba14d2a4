"""The last run's choice of units, so that an unchanged tree is offered without selection.

Choosing a unit for a module costs, per module: a source-key memo lookup, a unit lookup,
decoding each candidate's manifest and resolving its dependencies. On a warm run of an
unchanged tree the outcome is the previous run's. A run snapshot records that outcome: per
module the path mypy used (tokenised, see :mod:`metastore.paths`), the file's stat
signature, the chosen unit's key and manifest (without the dependency list) and where the
unit was found. The next run with the same namespace and sources takes each module whose
path mypy still resolves the same, whose options are the same and whose file still has
the recorded content: known from the stat signature when the file is the very file that
was recorded (same root directory; by the racy rule of :mod:`metastore.source_files` the
same signature means the same content), else by comparing the file's content key with the
unit's key - so a snapshot also serves another checkout of the same tree, or a store
exported from one. Every other module goes through the normal selection. mypy validates
every offered meta as always.

Knows nothing of mypy or SQLite: records in, bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Record(NamedTuple):
    """One module's unit as chosen in a run."""

    stem: str
    path: str  # the path mypy used, tokenised
    signature: tuple[int, int, int, int]  # size, mtime_ns, ino, ctime_ns when recorded
    layer: int  # where the unit's entry is (in the recording run's layers); -1 unknown:
    seq: int    # the next run looks the entry up by ``key``
    key: str  # the unit's key (hex)
    #: The unit's manifest fields but its dependencies, in :class:`Manifest` order:
    #: (path token, bound, meta, data, ex, ex_part, interface hash, options,
    #: local_partial_types, is_parallel).
    unit: tuple[str, str, str, str, str, str, str, str, bool, bool]
    #: The stems of the unit's dependencies among the snapshot's records: a record whose
    #: dependency is not taken (its file changed) is not taken either, so that its unit is
    #: chosen against the dependency's new unit.
    deps: tuple[str, ...] = ()


class Snapshot(NamedTuple):
    """A run's records with what they were recorded against."""

    roots: dict[str, str]  # root name -> its absolute path in the recording run
    layers: str  # identity of the store layers that ``Record.layer``/``seq`` refer to
    records: list[Record]


def encode(roots: Mapping[str, str], layers: str, records: Iterable[Record]) -> bytes:
    """Deterministic bytes for a snapshot (records sorted by stem; dependencies as indices
    into them, those that are not records left out)."""
    ordered = sorted(records)
    index = {r.stem: i for i, r in enumerate(ordered)}
    rows = [[r.stem, r.path, list(r.signature), r.layer, r.seq, r.key, list(r.unit),
             sorted({index[d] for d in r.deps if d in index})]
            for r in ordered]
    return json.dumps({"roots": dict(sorted(roots.items())), "layers": layers,
                       "records": rows}, separators=(",", ":")).encode()


def decode(data: bytes) -> Snapshot | None:
    """The snapshot in ``data``; None if it is not one (any malformed part)."""
    try:
        raw = json.loads(data)
        roots, layers, rows = raw["roots"], raw["layers"], raw["records"]
        if not (type(layers) is str and type(roots) is dict
                and all(type(v) is str for v in roots.values())):
            return None
        records: list[tuple[Record, list[int]]] = []
        for stem, path, signature, layer, seq, key, unit, deps in rows:
            size, mtime_ns, ino, ctime_ns = signature
            (token, bound, meta, data_digest, ex, ex_part, interface_hash, options, lp,
             par) = unit
            if not (type(stem) is type(path) is type(key) is type(token) is type(bound)
                    is type(meta)
                    is type(data_digest) is type(ex) is type(ex_part) is type(interface_hash)
                    is type(options) is str
                    and type(layer) is type(seq) is type(size) is type(mtime_ns) is type(ino)
                    is type(ctime_ns) is int and type(lp) is type(par) is bool
                    and type(deps) is list):
                return None
            # A string among the indices fails min/max, a float fails as an index below.
            if deps and (min(deps) < 0 or max(deps) >= len(rows)):
                return None
            records.append((Record(stem, path, (size, mtime_ns, ino, ctime_ns), layer, seq,
                                   key, (token, bound, meta, data_digest, ex, ex_part,
                                         interface_hash, options, lp, par)), deps))
        stems = [r.stem for r, _ in records]
        return Snapshot(roots, layers, [r._replace(deps=tuple(stems[d] for d in deps))
                                        for r, deps in records])
    except (ValueError, TypeError, KeyError):
        return None
