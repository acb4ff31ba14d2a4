"""The run snapshot's encoding (metastore.mypy.run_snapshot): deterministic, and strict on read."""

from __future__ import annotations

import json
import struct
import sys

import blake3
import pytest

from metastore.mypy.run_snapshot import MAGIC, Record, decode, encode

UNIT = ("pkg/a.py", "", "aa" * 32, "bb" * 32, "cc" * 32, "meta_ex", "dd" * 20, "{}", True,
        False)
ROOTS = {"cwd": "/src", ".": "/src", "typeshed_path0": "/venv/typeshed"}


def record(stem: str, path: str, *deps: str, **fields: object) -> Record:
    r = Record(stem, path, (10, 2, 3, 4), 0, 7, "cd" * 32, (path, *UNIT[1:]), deps,  # type: ignore[arg-type]
               meta=f"meta of {stem}".encode(), ex=f"ex of {stem}".encode(),
               module=stem.replace("/", "."))
    return r._replace(**fields)


def test_round_trip_is_deterministic() -> None:
    records = [record("pkg/b", "pkg/b.py", "pkg/a", seq=9, ex_rooted=True),
               record("pkg/a", "\0typeshed_path0\0pkg/a.pyi", "pkg/b", layer=-1, seq=-1,
                      signature=(11, 5, 6, 7), meta=b"", ex=b"\0\1\2")]
    data = encode(ROOTS, '["/store.db"]', records, options="opts")
    assert data == encode(dict(reversed(ROOTS.items())), '["/store.db"]',
                          list(reversed(records)), options="opts")
    snapshot = decode(data)
    assert snapshot is not None
    assert (snapshot.roots, snapshot.layers, snapshot.options) == (ROOTS, '["/store.db"]',
                                                                   "opts")
    assert snapshot.records == sorted(records)
    assert snapshot.stems == ["pkg/a", "pkg/b"]
    assert snapshot.modules == ["pkg.a", "pkg.b"]
    assert snapshot.paths == ["\0typeshed_path0\0pkg/a.pyi", "pkg/b.py"]
    assert list(snapshot.deps(0)) == [1] and list(snapshot.deps(1)) == [0]
    assert [snapshot.ex_rooted(i) for i in (0, 1)] == [False, True]


def test_dependencies_that_are_not_records_are_left_out() -> None:
    a = record("pkg/a", "pkg/a.py", "pkg/b", "builtins")
    b = record("pkg/b", "pkg/b.py")
    decoded = decode(encode({}, "[]", [a, b]))
    assert decoded is not None
    assert decoded.records == [a._replace(deps=("pkg/b",)), b]


def test_untrusted_records_are_counted() -> None:
    records = [record("a", "a.py", signature=(-1, -1, -1, -1)), record("b", "b.py")]
    decoded = decode(encode({}, "[]", records))
    assert decoded is not None and decoded.untrusted == 1


def test_an_empty_snapshot_round_trips() -> None:
    decoded = decode(encode({}, "[]", []))
    assert decoded is not None and len(decoded) == 0 and decoded.records == []


def _parts(data: bytes) -> tuple[dict[str, object], list[bytes]]:
    """The header and sections of an encoded snapshot."""
    start = len(MAGIC) + 32
    (length,) = struct.unpack_from("<I", data, start)
    header = json.loads(data[start + 4: start + 4 + length])
    at = start + 4 + length
    sections = []
    for n in header["sections"]:
        sections.append(data[at: at + n])
        at += n
    return header, sections


def _assemble(header: dict[str, object], sections: list[bytes]) -> bytes:
    """Bytes of a snapshot with this header and these sections (checksum recomputed)."""
    header = dict(header, sections=[len(s) for s in sections])
    text = json.dumps(header).encode()
    body = struct.pack("<I", len(text)) + text + b"".join(sections)
    return MAGIC + blake3.blake3(body).digest() + body


GOOD = encode(ROOTS, "[]", [record("pkg/a", "pkg/a.py", "pkg/b"), record("pkg/b", "pkg/b.py")])


def test_the_helpers_reassemble_a_good_snapshot() -> None:
    header, sections = _parts(GOOD)
    assert _assemble(header, sections) is not None
    assert decode(_assemble(header, sections)) is not None


@pytest.mark.parametrize("damage", [
    lambda d: d[:-1],  # truncated
    lambda d: d[:60] + bytes([d[60] ^ 1]) + d[61:],  # a flipped bit (checksum)
    lambda d: b"mypy-metastore run snapshot 1\n" + d[len(MAGIC):],  # another format
    lambda d: d + b"\0",  # trailing bytes
])
def test_damaged_bytes_are_not_a_snapshot(damage: object) -> None:
    assert decode(damage(GOOD)) is None  # type: ignore[operator]


@pytest.mark.parametrize("change", [
    {"count": 3},  # more records than the columns hold
    {"texts": 1},  # a string table of another size
    {"roots": {"cwd": 5}},  # a root path not a string
    {"roots": ["/src"]},  # roots not a mapping
    {"layers": 1},  # layers not a string
    {"options": None},  # options not a string
    {"untrusted": "0"},  # not an int
    {"byteorder": "middle"},
])
def test_a_malformed_header_rejects_the_snapshot(change: dict[str, object]) -> None:
    header, sections = _parts(GOOD)
    assert decode(_assemble({**header, **change}, sections)) is None


@pytest.mark.parametrize(("section", "value"), [
    (0, b"pkg/a"),  # one stem for two records
    (3, b"\0" * 63),  # keys not 32 bytes each
    (4, b"\0" * 8),  # signatures missing
    (8, struct.pack("=3I", 0, 5, 1)),  # dependency offsets going backwards
    (9, struct.pack("=I", 7)),  # a dependency index out of range
    (10, struct.pack("=3I", 0, 99, 100)),  # meta offsets beyond the metas
    (6, struct.pack("=14I", *range(14))),  # an index beyond the string table
])
def test_a_malformed_section_rejects_the_snapshot(section: int, value: bytes) -> None:
    header, sections = _parts(GOOD)
    sections[section] = value
    assert decode(_assemble(header, sections)) is None


def test_a_snapshot_of_the_other_byte_order_is_read() -> None:
    header, sections = _parts(GOOD)
    other = "big" if sys.byteorder == "little" else "little"
    swapped = list(sections)
    for i, fmt in {4: "q", 6: "I", 8: "I", 9: "I", 10: "I", 12: "I"}.items():
        n = len(sections[i]) // struct.calcsize(fmt)
        values = struct.unpack(f"={n}{fmt}", sections[i])
        swapped[i] = struct.pack(f"{'>' if other == 'big' else '<'}{n}{fmt}", *values)
    decoded = decode(_assemble({**header, "byteorder": other}, swapped))
    good = decode(GOOD)
    assert decoded is not None and good is not None
    assert decoded.records == good.records


def test_garbage_is_not_a_snapshot() -> None:
    assert decode(b"\x00\xff not json") is None
    assert decode(b'{"roots": {}, "layers": "[]", "records": []}') is None  # format 1
    assert decode(MAGIC) is None
    assert decode(b"") is None


def test_a_derived_snapshot_takes_roots_and_signatures_of_its_checkout() -> None:
    from metastore.mypy.run_snapshot import decode_derived, encode_derived

    base = decode(GOOD)
    assert base is not None
    signatures = [(20, 30, 40, 50), (-1, -1, -1, -1)]
    data = encode_derived(b"k" * 32, base.checksum, {"cwd": "/other"}, signatures)
    assert data == encode_derived(b"k" * 32, base.checksum, {"cwd": "/other"}, signatures)
    derived = decode_derived(data)
    assert derived is not None and derived.base_key == b"k" * 32 and derived.untrusted == 1
    assert base.derive(derived)
    assert base.roots == {"cwd": "/other"} and base.served_roots == ROOTS
    assert [base.signature(i) for i in range(2)] == signatures
    assert base.untrusted == 1
    assert [r.stem for r in base.records] == ["pkg/a", "pkg/b"]  # the rest as recorded


def test_a_derived_snapshot_holds_only_for_the_snapshot_it_was_derived_from() -> None:
    from metastore.mypy.run_snapshot import decode_derived, encode_derived

    base, other = decode(GOOD), decode(encode(ROOTS, "[]", [record("pkg/a", "pkg/a.py")]))
    assert base is not None and other is not None
    data = encode_derived(b"k" * 32, base.checksum, {}, [(1, 2, 3, 4)] * 2)
    derived = decode_derived(data)
    assert derived is not None
    assert not other.derive(derived)  # another snapshot (and another number of records)
    changed = decode(encode(ROOTS, "[]", [record("pkg/a", "pkg/a.py", seq=99),
                                          record("pkg/b", "pkg/b.py")]))
    assert changed is not None and not changed.derive(derived)  # another version
    assert decode_derived(data[:-1]) is None  # truncated
    assert decode_derived(data[:-8] + bytes(8)) is None  # checksum
    assert decode_derived(GOOD) is None and decode(data) is None  # not each other
