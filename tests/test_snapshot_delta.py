"""Delta run snapshots (metastore.mypy.snapshot_delta): applied, they read as the snapshot
encoded whole; never applied to another base; compacted when they grow."""

from __future__ import annotations

from metastore.mypy.run_snapshot import Record, Snapshot, decode, encode
from metastore.mypy.snapshot_delta import (
    apply, base_slot, changes, decode_delta, encode_delta)

ROOTS = {".": "/src"}
UNIT = ("", "", "aa" * 32, "bb" * 32, "cc" * 32, "meta_ex", "dd" * 20, "{}", True, False)


def record(n: int, *deps: int, **fields: object) -> Record:
    stem = f"pkg/m{n:03}"
    r = Record(stem, f"{stem}.py", (10, n, 3, 4), 0, n, f"{n:02x}" * 32,
               (f"{stem}.py", *UNIT[1:]), tuple(f"pkg/m{d:03}" for d in deps),  # type: ignore[arg-type]
               meta=f"meta of {stem}".encode() * (n % 3), ex=f"ex {n}".encode(),
               module=stem.replace("/", "."))
    return r._replace(**fields)


def base_records() -> list[Record]:
    return [record(n, *(d for d in (n - 1, n - 2, n + 5) if 0 <= d < 40)) for n in range(40)]


def snapshot(records: list[Record], **kw: str) -> Snapshot:
    decoded = decode(encode(ROOTS, kw.get("layers", "[]"), records,
                            options=kw.get("options", "")))
    assert decoded is not None
    return decoded


def as_set(s: Snapshot) -> dict[str, Record]:
    return {r.stem: r._replace(deps=tuple(sorted(r.deps))) for r in s.records}


def round_trip(base: Snapshot, records: list[Record]) -> Snapshot:
    found = changes(base, records)
    assert found is not None
    changed, removed = found
    data = encode_delta(base_slot(b"here"), base.checksum, {".": "/other"}, '["x"]',
                        changed, removed, options="o")
    assert data == encode_delta(base_slot(b"here"), base.checksum, {".": "/other"},
                                '["x"]', list(reversed(changed)), removed, options="o")
    delta = decode_delta(data)
    assert delta is not None and delta.base_key == base_slot(b"here")
    merged = apply(base, delta)
    assert merged is not None
    whole = snapshot(records, layers='["x"]', options="o")
    assert as_set(merged) == as_set(whole)
    assert (merged.roots, merged.layers, merged.options, merged.untrusted) == (
        {".": "/other"}, '["x"]', "o", whole.untrusted)
    assert merged.checksum == delta.checksum
    for i, stem in enumerate(merged.stems):
        j = whole.stems.index(stem)
        assert merged.unit(i) == whole.unit(j) and merged.meta(i) == whole.meta(j)
        assert {merged.stems[k] for k in merged.deps(i)} == {whole.stems[k] for k in whole.deps(j)}
    return merged


def test_an_unchanged_snapshot_makes_an_empty_delta() -> None:
    base = snapshot(base_records())
    assert changes(base, base_records()) == ([], [])
    round_trip(base, base_records())


def test_replaced_added_and_removed_records_round_trip() -> None:
    records = base_records()
    base = snapshot(records)
    records[3] = records[3]._replace(meta=b"new meta", key="ee" * 32, signature=(-1, -1, -1, -1))
    records[17] = records[17]._replace(deps=("pkg/m003", "pkg/m040"))
    records.append(record(40, 3, 39))
    del records[20]
    del records[9]
    found = changes(base, records)
    assert found is not None
    assert sorted(r.stem for r in found[0]) == ["pkg/m003", "pkg/m017", "pkg/m040"]
    assert found[1] == ["pkg/m009", "pkg/m020"]
    round_trip(base, records)


def test_a_dependency_removed_changes_no_record() -> None:
    records = base_records()
    base = snapshot(records)
    del records[39]  # m034 and m037/m038 depended on it: their deps just lose it
    found = changes(base, records)
    assert found == ([], ["pkg/m039"])
    round_trip(base, records)


def test_a_delta_on_another_base_is_refused() -> None:
    base = snapshot(base_records())
    other = snapshot(base_records()[:-1])
    data = encode_delta(base_slot(b"here"), base.checksum, ROOTS, "[]", [record(50)], [])
    delta = decode_delta(data)
    assert delta is not None
    assert apply(other, delta) is None
    assert apply(base, delta) is not None
    damaged = bytearray(data)
    damaged[-1] ^= 1
    assert decode_delta(bytes(damaged)) is None
    assert decode_delta(encode(ROOTS, "[]", base_records())) is None


def test_a_delta_past_a_quarter_of_the_base_is_compacted() -> None:
    records = base_records()
    base = snapshot(records)
    changed = [r._replace(seq=99) if r.module.endswith(("1", "2", "3")) else r for r in records]
    assert changes(base, changed[:10] + records[10:]) is not None
    assert changes(base, changed) is None  # 12 of 40
    assert changes(base, records[:29]) is None  # 11 removed


def test_the_full_snapshot_alternates_between_two_slots() -> None:
    first = base_slot(b"here")
    assert base_slot(b"here", None) == first and base_slot(b"here", b"other") == first
    second = base_slot(b"here", first)
    assert second != first and base_slot(b"here", second) == first
    assert base_slot(b"there") not in (first, second)


def test_random_changes_round_trip() -> None:
    import random

    rng = random.Random(16)
    for _ in range(30):
        records = base_records()
        base = snapshot(records)
        for _ in range(rng.randint(0, 3)):
            del records[rng.randrange(len(records))]
        for _ in range(rng.randint(0, 4)):
            k = rng.randrange(len(records))
            records[k] = records[k]._replace(meta=bytes([rng.randrange(256)]) * rng.randint(0, 9),
                                             deps=(f"pkg/m{rng.randrange(45):03}",))
        for _ in range(rng.randint(0, 2)):
            records.append(record(rng.randrange(40, 60), rng.randrange(60)))
        unique = list({r.stem: r for r in records}.values())
        if changes(base, unique) is not None:
            round_trip(base, unique)
