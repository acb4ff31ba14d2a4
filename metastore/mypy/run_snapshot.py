"""The last run's choice of units, so that an unchanged tree is offered without selection.

Choosing a unit for a module costs, per module: a source-key memo lookup, a unit lookup,
decoding each candidate's manifest, resolving its dependencies, fetching and checking its
meta and meta_ex/err blobs and patching the meta for the file on disk. On a warm run of an
unchanged tree the outcome is the previous run's. A run snapshot records that outcome: per
module the path mypy used (tokenised, see :mod:`metastore.mypy.paths`), the file's stat
signature, the chosen unit's key and manifest (without the dependency list), where the
unit was found, the module's dependencies among the records - and the meta and meta_ex/err
entries exactly as they were served to mypy, so that the next run can serve them again
without fetching, checking or patching anything. The next run with the same namespace,
options and sources takes each module whose path mypy still resolves the same and whose
file still has the recorded content: known from the stat signature when the file is the
very file that was recorded (same root directory; by the racy rule of
:mod:`metastore.mypy.source_files` the same signature means the same content), else by comparing
the file's content key with the unit's key - so a snapshot also serves another checkout of
the same tree. Every other module goes through the normal selection. mypy validates every
offered meta as always.

The encoding is columnar and binary, so that decoding a snapshot of 10,000 modules is a few
slices and splits rather than 10,000 parsed records; a blake3 checksum over the body makes a
damaged snapshot read as no snapshot.

A new checkout of a tree (a worktree, a sandbox) takes the last snapshot of another by
content; what it records differs from that one only in where the files are and their stat
signatures. It records a *derived* snapshot: the slot and checksum of the snapshot it was
taken from, its own roots and signatures (32 bytes a record instead of the entries); its
metas are patched for the files on each run. It holds while that snapshot is unchanged.

Knows nothing of mypy or SQLite: records in, bytes out.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import NamedTuple

import blake3

#: Leading bytes of an encoded snapshot (the format before this one was JSON), and of a
#: derived one.
MAGIC = b"mypy-metastore run snapshot 2\n"
DERIVED_MAGIC = b"mypy-metastore derived run snapshot 2\n"
_LENGTH = struct.Struct("<I")
_CHECKSUM_SIZE = 32
_SEP = "\0"  # between strings: no stem, module id, digest or JSON text holds a raw NUL
#: Between paths: a tokenised path (see metastore.mypy.paths) holds NULs, but never two in a row
#: and never as its last character, so splitting on two finds exactly the paths.
_PATH_SEP = "\0\0"
#: Unit fields kept in the string table, in :class:`Record.unit` order after the path.
_TEXT_FIELDS = 7  # bound, meta, data, ex, ex_part, interface hash, options
_DATA_FIELD = 2
_LP, _PAR, _EX_ROOTED = 1, 2, 4  # flag bits
_INTS = 6  # size, mtime_ns, ino, ctime_ns, layer, seq

assert array("I").itemsize == 4 and array("q").itemsize == 8

Unit = tuple[str, str, str, str, str, str, str, str, bool, bool]


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
    unit: Unit
    #: The stems of the unit's dependencies among the snapshot's records: a record whose
    #: dependency is not taken (its file changed) is not taken either, so that its unit is
    #: chosen against the dependency's new unit.
    deps: tuple[str, ...] = ()
    #: The meta entry as served for this path and signature, and the meta_ex/err entry as
    #: served under the recording run's roots.
    meta: bytes = b""
    ex: bytes = b""
    #: True if the stored meta_ex/err entry names files under roots (then ``ex`` holds for
    #: the recording run's roots only).
    ex_rooted: bool = False
    module: str = ""  # the module's id


class Snapshot:
    """A decoded snapshot, by column: record ``i`` is ``stems[i]``, ``paths[i]``, ... .

    Attributes: ``roots`` (root name -> absolute path in the recording run), ``layers``
    (identity of the store layers that ``layer``/``seq`` refer to), ``options`` (the
    fingerprint of the options it was recorded with), ``untrusted`` (how many records
    carry a signature no file has: provable by content only), ``stems``, ``modules``
    (module ids), ``paths`` (tokenised), ``ints`` (per record: size, mtime_ns, ino,
    ctime_ns, layer, seq), ``flags``; the rest through the methods.
    """

    __slots__ = ("roots", "served_roots", "checksum", "layers", "options", "untrusted",
                 "stems", "modules", "paths", "base_checksum", "base_stems", "from_delta",
                 "ints", "flags", "_keys", "_texts", "_text_index", "_dep_offsets", "_deps",
                 "_meta_offsets", "_metas", "_ex_offsets", "_exs", "_dep_ends", "_meta_ends",
                 "_ex_ends")

    def __init__(self, roots: dict[str, str], layers: str, options: str, untrusted: int,
                 sections: list[bytes], count: int, text_count: int) -> None:
        self.roots = roots
        #: The roots the served entries were recorded under (``roots``, but in a snapshot
        #: derived from another: that one's).
        self.served_roots = roots
        #: The blake3 checksum of its encoding (set by decode()): what a derived snapshot
        #: names.
        self.checksum = b""
        self.layers = layers
        self.options = options
        self.untrusted = untrusted
        (stems, modules, paths, keys, ints, texts, text_index, flags, dep_offsets, deps,
         meta_offsets, metas, ex_offsets, exs) = sections
        self.stems = _strings(stems, count)
        self.modules = _strings(modules, count)
        self.paths = _strings(paths, count, _PATH_SEP)
        self._keys = keys
        self.ints = _ints("q", ints)
        self._texts = _strings(texts, text_count)
        self._text_index = _ints("I", text_index)
        self.flags = flags
        self._dep_offsets = _ints("I", dep_offsets)
        self._deps = _ints("I", deps)
        self._meta_offsets = _ints("I", meta_offsets)
        self._metas = metas
        self._ex_offsets = _ints("I", ex_offsets)
        self._exs = exs
        # Record i's bytes are [offsets[i]: ends[i]] (a snapshot with a delta points some
        # records into the delta's bytes, appended).
        self._dep_ends = self._dep_offsets[1:]
        self._meta_ends = self._meta_offsets[1:]
        self._ex_ends = self._ex_offsets[1:]
        #: Set by :meth:`with_delta`: the full snapshot's checksum and stems, and the indices
        #: of the records that came from the delta (here: this one's, and none).
        self.base_checksum = b""
        self.base_stems = self.stems
        self.from_delta: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.stems)

    def key(self, i: int) -> bytes:
        return self._keys[32 * i: 32 * i + 32]

    def signature(self, i: int) -> tuple[int, int, int, int]:
        ints = self.ints
        j = _INTS * i
        return ints[j], ints[j + 1], ints[j + 2], ints[j + 3]

    def location(self, i: int) -> tuple[int, int]:
        """(layer, seq) of record ``i``'s entry, as recorded (see :attr:`Record.layer`)."""
        j = _INTS * i
        return self.ints[j + 4], self.ints[j + 5]

    def unit(self, i: int) -> Unit:
        t, k, flags = self._texts, self._text_index, self.flags[i]
        j = _TEXT_FIELDS * i
        return (self.paths[i], t[k[j]], t[k[j + 1]], t[k[j + 2]], t[k[j + 3]], t[k[j + 4]],
                t[k[j + 5]], t[k[j + 6]], bool(flags & _LP), bool(flags & _PAR))

    def text(self, i: int, field: int) -> str:
        """Field ``field`` (0 bound, 1 meta, 2 data, 3 ex, 4 ex_part, 5 interface hash,
        6 options) of record ``i``'s unit."""
        return self._texts[self._text_index[_TEXT_FIELDS * i + field]]

    def data_texts(self) -> set[str]:
        """The digests (hex) of the data blobs of every record's unit."""
        texts, index = self._texts, self._text_index
        return {texts[index[j]] for j in range(_DATA_FIELD, _TEXT_FIELDS * len(self),
                                               _TEXT_FIELDS)}

    def ex_rooted(self, i: int) -> bool:
        """See :attr:`Record.ex_rooted`."""
        return bool(self.flags[i] & _EX_ROOTED)

    def deps(self, i: int) -> array[int]:
        """Indices of record ``i``'s dependencies among the records."""
        return self._deps[self._dep_offsets[i]: self._dep_ends[i]]

    def meta(self, i: int) -> bytes:
        return self._metas[self._meta_offsets[i]: self._meta_ends[i]]

    def ex(self, i: int) -> bytes:
        return self._exs[self._ex_offsets[i]: self._ex_ends[i]]

    def served(self, indices: Iterable[int]
               ) -> list[tuple[bytes, bytes, bytes, tuple[int, int]]]:
        """(meta, ex, key, location) of each record of ``indices``: :meth:`meta`,
        :meth:`ex`, :meth:`key` and :meth:`location` at once (a warm run asks for all
        10,000 records of a big project)."""
        metas, mo, me = self._metas, self._meta_offsets, self._meta_ends
        exs, xo, xe = self._exs, self._ex_offsets, self._ex_ends
        keys, ints = self._keys, self.ints
        return [(metas[mo[i]: me[i]], exs[xo[i]: xe[i]], keys[32 * i: 32 * i + 32],
                 (ints[_INTS * i + 4], ints[_INTS * i + 5])) for i in indices]

    def record(self, i: int) -> Record:
        stems = self.stems
        return Record(stems[i], self.paths[i], self.signature(i), *self.location(i),
                      self.key(i).hex(), self.unit(i), tuple(stems[d] for d in self.deps(i)),
                      self.meta(i), self.ex(i), self.ex_rooted(i), self.modules[i])

    @property
    def records(self) -> list[Record]:
        return [self.record(i) for i in range(len(self))]

    def derive(self, derived: Derived) -> bool:
        """Take the roots and signatures of ``derived`` (a snapshot derived from this one);
        False (and unchanged) if it was derived from another snapshot or another version of
        this one."""
        sigs = derived.signatures
        if derived.base_checksum != self.checksum or len(sigs) != 4 * len(self):
            return False
        ints = self.ints
        for field in range(4):
            ints[field::_INTS] = sigs[field::4]
        self.roots = derived.roots
        self.untrusted = derived.untrusted
        return True

    def with_delta(self, delta: Snapshot, deps: list[list[str]], checksum: bytes) -> Snapshot:
        """This (full) snapshot with ``delta``'s records: each in place of this one's record
        of the same stem, or added after them; each depending on the records its ``deps``
        (stems, in the delta's order) name. ``checksum`` names the result. Costs copies of
        the columns and work per record of the delta, not per record of this one."""
        stems, count = self.stems, len(self.stems)
        new = Snapshot.__new__(Snapshot)
        new.roots, new.served_roots, new.layers = self.roots, self.served_roots, self.layers
        new.options, new.checksum = self.options, checksum
        new.base_checksum, new.base_stems = self.checksum, stems
        new.stems, new.modules, new.paths = stems[:], self.modules[:], self.paths[:]
        keys, ints, flags = bytearray(self._keys), self.ints[:], bytearray(self.flags)
        new._texts = self._texts + delta._texts
        text_index, shift = self._text_index[:], len(self._texts)
        new._metas, new._exs = self._metas + delta._metas, self._exs + delta._exs
        meta_offsets, meta_ends = self._meta_offsets[:count], self._meta_ends[:]
        ex_offsets, ex_ends = self._ex_offsets[:count], self._ex_ends[:]
        dep_offsets, dep_ends, dep_values = self._dep_offsets[:count], self._dep_ends[:], \
            self._deps[:]
        metas_at, exs_at = len(self._metas), len(self._exs)
        # Where each delta record goes: its stem's index here, else after the records.
        where: dict[str, int] = {}
        added = count
        for stem in delta.stems:
            i = _position(stems, stem)
            if i is None:
                i, added = added, added + 1
            where[stem] = i
        # Records added get their places after this one's, then are written as replaced.
        extra = added - count
        new.stems += [stem for stem in delta.stems if where[stem] >= count]
        new.modules += [""] * extra
        new.paths += [""] * extra
        keys += bytes(32 * extra)
        ints.extend([0] * (_INTS * extra))
        text_index.extend([0] * (_TEXT_FIELDS * extra))
        flags += bytes(extra)
        for column in (meta_offsets, meta_ends, ex_offsets, ex_ends, dep_offsets, dep_ends):
            column.extend([0] * extra)
        untrusted = self.untrusted + delta.untrusted
        for j, stem in enumerate(delta.stems):
            i = where[stem]
            found = set()
            for name in deps[j]:
                target = where[name] if name in where else _position(stems, name)
                if target is not None:
                    found.add(target)
            untrusted -= ints[_INTS * i] < 0  # the record replaced (none: zeros)
            new.modules[i], new.paths[i] = delta.modules[j], delta.paths[j]
            keys[32 * i: 32 * i + 32] = delta._keys[32 * j: 32 * j + 32]
            ints[_INTS * i: _INTS * i + _INTS] = delta.ints[_INTS * j: _INTS * j + _INTS]
            text_index[_TEXT_FIELDS * i: _TEXT_FIELDS * (i + 1)] = array("I", map(
                shift.__add__, delta._text_index[_TEXT_FIELDS * j: _TEXT_FIELDS * (j + 1)]))
            flags[i] = delta.flags[j]
            meta_offsets[i] = metas_at + delta._meta_offsets[j]
            meta_ends[i] = metas_at + delta._meta_ends[j]
            ex_offsets[i], ex_ends[i] = exs_at + delta._ex_offsets[j], exs_at + delta._ex_ends[j]
            dep_offsets[i] = len(dep_values)
            dep_values.extend(sorted(found))
            dep_ends[i] = len(dep_values)
        new.untrusted = untrusted
        new._keys, new.ints, new.flags, new._text_index = bytes(keys), ints, bytes(flags), \
            text_index
        new._meta_offsets, new._meta_ends = meta_offsets, meta_ends
        new._ex_offsets, new._ex_ends = ex_offsets, ex_ends
        new._dep_offsets, new._dep_ends, new._deps = dep_offsets, dep_ends, dep_values
        new.from_delta = frozenset(where.values())
        return new


def encode(roots: Mapping[str, str], layers: str, records: Iterable[Record], *,
           options: str = "") -> bytes:
    """Deterministic bytes for a snapshot (records sorted by stem; dependencies as indices
    into them, those that are not records left out)."""
    ordered = sorted(records, key=_by_stem)
    count = len(ordered)
    index = {r.stem: i for i, r in enumerate(ordered)}
    ints = array("q", [v for r in ordered for v in r.signature + (r.layer, r.seq)])
    # The unit's texts, interned: (bound, meta, data, ex, ex_part, hash, options) each.
    texts: dict[str, int] = {}
    intern = texts.setdefault
    text_index = array("I", [intern(t, len(texts)) for r in ordered for t in r.unit[1:8]])
    flags = bytes([(_LP if r.unit[8] else 0) | (_PAR if r.unit[9] else 0)
                   | (_EX_ROOTED if r.ex_rooted else 0) for r in ordered])
    get = index.get
    dep_lists = [sorted({i for d in r.deps if (i := get(d)) is not None}) for r in ordered]
    deps = array("I", [i for ds in dep_lists for i in ds])
    sections = [
        _joined([r.stem for r in ordered]),
        _joined([r.module for r in ordered]),
        _joined([r.path for r in ordered], _PATH_SEP),
        bytes.fromhex("".join([r.key for r in ordered])),
        ints.tobytes(), _joined(texts), text_index.tobytes(), flags,
        _offsets(map(len, dep_lists)), deps.tobytes(),
        _offsets(len(r.meta) for r in ordered), b"".join([r.meta for r in ordered]),
        _offsets(len(r.ex) for r in ordered), b"".join([r.ex for r in ordered]),
    ]
    untrusted = sum(1 for r in ordered if r.signature[0] < 0)
    header = json.dumps({
        "roots": dict(sorted(roots.items())), "layers": layers, "options": options,
        "count": count, "texts": len(texts), "untrusted": untrusted,
        "byteorder": sys.byteorder,
        "sections": [len(s) for s in sections],
    }, separators=(",", ":"), sort_keys=True).encode()
    body = b"".join([_LENGTH.pack(len(header)), header, *sections])
    return seal(MAGIC, body)


class Derived:
    """A snapshot derived from another (see the module docstring): ``base_key`` the slot of
    that snapshot, ``base_checksum`` its checksum, then this checkout's ``roots``, the
    ``signatures`` of its files (4 per record of the base, in its order) and how many of
    them are ``untrusted``."""

    __slots__ = ("base_key", "base_checksum", "roots", "signatures", "untrusted")

    def __init__(self, base_key: bytes, base_checksum: bytes, roots: dict[str, str],
                 signatures: array[int], untrusted: int) -> None:
        self.base_key = base_key
        self.base_checksum = base_checksum
        self.roots = roots
        self.signatures = signatures
        self.untrusted = untrusted


def encode_derived(base_key: bytes, base_checksum: bytes, roots: Mapping[str, str],
                   signatures: Iterable[tuple[int, int, int, int]]) -> bytes:
    """Deterministic bytes for a derived snapshot (``signatures`` in the base's order)."""
    sigs = [sig for sig in signatures]
    values = array("q", [v for sig in sigs for v in sig])
    header = json.dumps({
        "roots": dict(sorted(roots.items())), "byteorder": sys.byteorder,
        "untrusted": sum(1 for sig in sigs if sig[0] < 0),
    }, separators=(",", ":"), sort_keys=True).encode()
    body = b"".join([base_key, base_checksum, _LENGTH.pack(len(header)), header,
                     values.tobytes()])
    return seal(DERIVED_MAGIC, body)


def seal(magic: bytes, body: bytes) -> bytes:
    """``body`` framed as every snapshot format is: ``magic``, the blake3 checksum of
    ``body``, ``body`` (read back by :func:`unseal`)."""
    return magic + blake3.blake3(body).digest() + body


def unseal(data: bytes, magic: bytes) -> tuple[bytes, int] | None:
    """(checksum, offset of the body) of ``data`` framed by :func:`seal` with ``magic``;
    None if it starts otherwise or its checksum does not match. Bodies over 1 MiB (a full
    snapshot of a big project) are hashed on several threads."""
    if not data.startswith(magic):
        return None
    start = len(magic) + _CHECKSUM_SIZE
    checksum = data[len(magic): start]
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO) if len(data) > 1 << 20 \
        else blake3.blake3()
    hasher.update(memoryview(data)[start:])
    return (checksum, start) if hasher.digest() == checksum else None


def decode_derived(data: bytes) -> Derived | None:
    """The derived snapshot in ``data``; None if it is not one."""
    try:
        sealed = unseal(data, DERIVED_MAGIC)
        if sealed is None:
            return None
        start = sealed[1]
        base_key = data[start: start + 32]
        base_checksum = data[start + 32: start + 64]
        (length,) = _LENGTH.unpack_from(data, start + 64)
        at = start + 64 + _LENGTH.size
        header = json.loads(data[at: at + length])
        roots, untrusted, order = header["roots"], header["untrusted"], header["byteorder"]
        if not (len(base_key) == len(base_checksum) == 32 and type(roots) is dict
                and all(type(v) is str for v in roots.values())
                and type(untrusted) is int and order in ("little", "big")):
            return None
        signatures = _ints("q", data[at + length:])
        if len(signatures) % 4:
            return None
        if order != sys.byteorder:
            signatures.byteswap()
        return Derived(base_key, base_checksum, roots, signatures, untrusted)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, struct.error):
        return None


def _position(stems: list[str], stem: str) -> int | None:
    """The index of ``stem`` in ``stems`` (sorted, as :func:`encode` writes them), or None."""
    i = bisect_left(stems, stem)
    return i if i < len(stems) and stems[i] == stem else None


def _by_stem(record: Record) -> str:
    return record.stem


def _offsets(lengths: Iterable[int]) -> bytes:
    """Offsets (array "I") of consecutive items of these lengths: 0, then each end."""
    return array("I", [0, *accumulate(lengths)]).tobytes()


def decode(data: bytes) -> Snapshot | None:
    """The snapshot in ``data``; None if it is not one (another format, a checksum that does
    not match, any malformed part)."""
    try:
        sealed = unseal(data, MAGIC)
        if sealed is None:
            return None
        checksum, start = sealed
        view = memoryview(data)
        (length,) = _LENGTH.unpack_from(data, start)
        at = start + _LENGTH.size
        header = json.loads(bytes(view[at: at + length]))
        at += length
        roots, layers, options = header["roots"], header["layers"], header["options"]
        count, text_count = header["count"], header["texts"]
        untrusted, lengths = header["untrusted"], header["sections"]
        if not (type(layers) is type(options) is str and type(roots) is dict
                and all(type(v) is str for v in roots.values())
                and type(count) is type(text_count) is type(untrusted) is int
                and type(lengths) is list
                and len(lengths) == 14 and all(type(n) is int and n >= 0 for n in lengths)
                and at + sum(lengths) == len(data)
                and header["byteorder"] in ("little", "big")):
            return None
        sections = []
        for n in lengths:
            sections.append(data[at: at + n])
            at += n
        if header["byteorder"] != sys.byteorder:
            sections = _swapped(sections)
        snapshot = Snapshot(roots, layers, options, untrusted, sections, count, text_count)
        snapshot.checksum = snapshot.base_checksum = checksum
        return snapshot if _consistent(snapshot, count, text_count) else None
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, struct.error):
        return None


def _consistent(s: Snapshot, count: int, text_count: int) -> bool:
    """True if every column has ``count`` records, the string table ``text_count`` strings,
    and every offset and index is in range."""
    if not (len(s.stems) == len(s.modules) == len(s.paths) == len(s.flags) == count
            and len(s._texts) == text_count
            and len(s._keys) == 32 * count and len(s.ints) == _INTS * count
            and len(s._text_index) == _TEXT_FIELDS * count
            and (not s._text_index or max(s._text_index) < len(s._texts))
            and (not s._deps or max(s._deps) < count)):
        return False
    for offsets, total in ((s._dep_offsets, len(s._deps)), (s._meta_offsets, len(s._metas)),
                           (s._ex_offsets, len(s._exs))):
        if len(offsets) != count + 1 or offsets[0] != 0 or offsets[-1] != total:
            return False
        if offsets.tolist() != sorted(offsets):
            return False
    return True


def _swapped(sections: list[bytes]) -> list[bytes]:
    """Sections written on a machine of the other byte order, with their integers swapped."""
    typecodes = {4: "q", 6: "I", 8: "I", 9: "I", 10: "I", 12: "I"}
    out = list(sections)
    for i, code in typecodes.items():
        values = _ints(code, sections[i])
        values.byteswap()
        out[i] = values.tobytes()
    return out


def _joined(strings: Iterable[str], sep: str = _SEP) -> bytes:
    return sep.join(strings).encode("utf-8", "surrogateescape")


def _strings(data: bytes, count: int, sep: str = _SEP) -> list[str]:
    """The ``count`` strings joined in ``data`` (a count that does not match is caught by
    the consistency check)."""
    return data.decode("utf-8", "surrogateescape").split(sep) if count else []


def _ints(typecode: str, data: bytes) -> array[int]:
    values = array(typecode)
    values.frombytes(data)  # ValueError if the length is not a multiple of the item size
    return values
