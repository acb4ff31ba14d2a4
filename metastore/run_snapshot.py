"""The last run's choice of units, so that an unchanged tree is offered without selection.

Choosing a unit for a module costs, per module: a source-key memo lookup, a unit lookup,
decoding each candidate's manifest and resolving its dependencies. On a warm run of an
unchanged tree the outcome is the previous run's. A run snapshot records that outcome: per
module the path mypy used, the file's stat signature and the chosen unit (its manifest
without the dependency list, and where it was found). The next run with the same
namespace, roots, sources and layers takes each module whose file still has that
signature (so, by the racy rule of :mod:`metastore.source_files`, the same content and
hence the same unit key), whose path mypy still resolves the same and whose options are
the same; every other module goes through the normal selection. mypy validates every
offered meta as always.

Knows nothing of mypy or SQLite: records in, bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple


class Record(NamedTuple):
    """One module's unit as chosen in a run."""

    stem: str
    path: str  # the path mypy used
    signature: tuple[int, int, int, int]  # size, mtime_ns, ino, ctime_ns when keyed
    layer: int  # where the unit's entry is; -1 for a unit published by the recording run,
    seq: int    # whose entry the next run looks up by ``key``
    key: str  # the unit's key (hex) when layer is -1, else ""
    #: The unit's manifest fields but its dependencies, in :class:`Manifest` order:
    #: (path token, bound, meta, data, ex, ex_part, interface hash, options,
    #: local_partial_types, is_parallel).
    unit: tuple[str, str, str, str, str, str, str, str, bool, bool]


def encode(records: Iterable[Record]) -> bytes:
    """Deterministic bytes for ``records`` (sorted by stem)."""
    rows = [[r.stem, r.path, list(r.signature), r.layer, r.seq, r.key, list(r.unit)]
            for r in sorted(records)]
    return json.dumps(rows, separators=(",", ":")).encode()


def decode(data: bytes) -> list[Record] | None:
    """The records in ``data``; None if it is not a snapshot (any malformed row)."""
    try:
        rows = json.loads(data)
        records = []
        for stem, path, signature, layer, seq, key, unit in rows:
            size, mtime_ns, ino, ctime_ns = signature
            (token, bound, meta, data_digest, ex, ex_part, interface_hash, options, lp,
             par) = unit
            if not (type(stem) is type(path) is type(key) is type(token) is type(bound)
                    is type(meta)
                    is type(data_digest) is type(ex) is type(ex_part) is type(interface_hash)
                    is type(options) is str
                    and type(layer) is type(seq) is type(size) is type(mtime_ns) is type(ino)
                    is type(ctime_ns) is int and type(lp) is type(par) is bool):
                return None
            records.append(Record(stem, path, (size, mtime_ns, ino, ctime_ns), layer, seq, key,
                                  (token, bound, meta, data_digest, ex, ex_part,
                                   interface_hash, options, lp, par)))
        return records
    except (ValueError, TypeError):
        return None
