"""The run snapshot's encoding (metastore.run_snapshot): deterministic, and strict on read."""

from __future__ import annotations

import json

import pytest

from metastore.run_snapshot import Record, Snapshot, decode, encode

UNIT = ("pkg/a.py", "", "aa" * 32, "bb" * 32, "cc" * 32, "meta_ex", "dd" * 20, "{}", True,
        False)


def test_round_trip_is_deterministic() -> None:
    records = [Record("pkg/b", "pkg/b.py", (10, 2, 3, 4), 0, 7, "cd" * 32, UNIT, ("pkg/a",)),
               Record("pkg/a", "pkg/a.py", (11, 5, 6, 7), -1, -1, "ab" * 32, UNIT,
                      ("pkg/b",))]
    roots = {"cwd": "/src", ".": "/src", "typeshed_path0": "/venv/typeshed"}
    data = encode(roots, '["/store.db"]', records)
    assert data == encode(dict(reversed(roots.items())), '["/store.db"]',
                          list(reversed(records)))
    assert decode(data) == Snapshot(roots, '["/store.db"]', sorted(records))


def test_dependencies_that_are_not_records_are_left_out() -> None:
    record = Record("pkg/a", "pkg/a.py", (1, 2, 3, 4), 0, 1, "ab" * 32, UNIT,
                    ("pkg/b", "builtins"))
    b = Record("pkg/b", "pkg/b.py", (1, 2, 3, 4), 0, 2, "cd" * 32, UNIT)
    decoded = decode(encode({}, "[]", [record, b]))
    assert decoded is not None
    assert decoded.records == [record._replace(deps=("pkg/b",)), b]


@pytest.mark.parametrize("row", [
    ["pkg/a", "pkg/a.py", [1, 2, 3], 0, 1, "", list(UNIT), []],  # short signature
    ["pkg/a", "pkg/a.py", [1, 2, 3, "4"], 0, 1, "", list(UNIT), []],  # a field not an int
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", list(UNIT)[:-1], []],  # short unit
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", [*UNIT[:8], 1, False], []],  # not a bool
    ["pkg/a", 5, [1, 2, 3, 4], 0, 1, "", list(UNIT), []],  # a path not a string
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0.5, 1, "", list(UNIT), []],  # a layer not an int
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], -1, -1, None, list(UNIT), []],  # a key not a string
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", list(UNIT), [2]],  # a dependency out of range
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", list(UNIT), ["pkg/b"]],  # not an index
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", list(UNIT), [0, "1"]],  # not an index
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", list(UNIT), [0.5]],  # not an index
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", list(UNIT), {"0": 1}],  # not a list
    ["pkg/a", "pkg/a.py", [1, 2, 3, 4], 0, 1, "", list(UNIT)],  # no dependencies
])
def test_a_malformed_row_rejects_the_snapshot(row: list[object]) -> None:
    good = ["pkg/b", "pkg/b.py", [1, 2, 3, 4], 0, 1, "", list(UNIT), [0]]

    def snapshot(*rows: list[object]) -> bytes:
        return json.dumps({"roots": {"cwd": "/src"}, "layers": "[]",
                           "records": list(rows)}).encode()
    assert decode(snapshot(good)) is not None
    assert decode(snapshot(good, row)) is None


@pytest.mark.parametrize("header", [
    {"roots": {"cwd": 5}, "layers": "[]"},  # a root path not a string
    {"roots": ["/src"], "layers": "[]"},  # roots not a mapping
    {"roots": {}, "layers": 1},  # layers not a string
    {"layers": "[]"},  # no roots
])
def test_a_malformed_header_rejects_the_snapshot(header: dict[str, object]) -> None:
    assert decode(json.dumps({**header, "records": []}).encode()) is None


def test_garbage_is_not_a_snapshot() -> None:
    assert decode(b"\x00\xff not json") is None
    assert decode(b'[1, 2]') is None
    assert decode(b'[]') is None  # the format before snapshots had a header
