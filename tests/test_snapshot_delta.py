"""Deltas on a run snapshot (metastore.mypy.snapshot_delta): a full snapshot with a delta
reads as the snapshot of the new records would, and a delta holds only on its own base."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from metastore.mypy import snapshot_delta
from metastore.mypy.run_snapshot import Record, Snapshot, decode, encode
from test_run_snapshot import ROOTS, record

LAYERS = '["/store.db"]'


def full(records: list[Record]) -> Snapshot:
    snapshot = decode(encode(ROOTS, LAYERS, records, options="o"))
    assert snapshot is not None
    return snapshot


def as_set(snapshot: Snapshot) -> dict[str, Record]:
    """The records, by stem, dependencies sorted (a merged snapshot holds its delta's
    records last, and a record's dependencies in the order of their records)."""
    out = {r.stem: r._replace(deps=tuple(sorted(r.deps))) for r in snapshot.records}
    assert len(out) == len(snapshot)
    return out


def with_delta(base: Snapshot, records: list[Record]) -> Snapshot:
    data = snapshot_delta.encode(base.checksum, ROOTS, LAYERS, records, options="o")
    delta = snapshot_delta.decode(data)
    assert delta is not None and delta.base_key == snapshot_delta.full_key(base.checksum)
    merged = delta.applied(base)
    assert merged is not None
    return merged


STEMS = [f"pkg/m{i:02d}" for i in range(30)]


@st.composite
def states(draw: st.DrawFn) -> tuple[list[Record], list[Record]]:
    """A full snapshot's records, then records replacing or adding some."""
    present = draw(st.lists(st.sampled_from(STEMS), min_size=1, unique=True))

    def make(stem: str, version: int) -> Record:
        deps = draw(st.lists(st.sampled_from(STEMS), max_size=4, unique=True))
        return record(stem, stem + ".py", *deps, seq=version,
                      meta=f"meta {stem} {version}".encode() * draw(st.integers(0, 3)),
                      ex=f"ex {version}".encode(),
                      signature=(-1, -1, -1, -1) if draw(st.booleans()) else (1, 2, 3, 4))
    base = [make(stem, 0) for stem in present]
    changed = [make(stem, 1) for stem in draw(st.lists(st.sampled_from(STEMS), unique=True))]
    return base, changed


@settings(max_examples=300, deadline=None)
@given(states())
def test_a_full_snapshot_with_a_delta_reads_as_the_new_records(
        state: tuple[list[Record], list[Record]]) -> None:
    base_records, changed = state
    merged = with_delta(full(base_records), changed)
    # A record keeps the dependencies its full snapshot held (those on its records), as a
    # full snapshot written anew from the records taken would.
    present = {r.stem for r in base_records}
    new = {r.stem: r._replace(deps=tuple(sorted(d for d in r.deps if d in present)))
           for r in base_records}
    new.update({r.stem: r._replace(deps=tuple(sorted(r.deps))) for r in changed})
    expected = full(list(new.values()))
    assert as_set(merged) == as_set(expected)
    assert merged.untrusted == expected.untrusted
    assert sorted(merged.stems) == expected.stems
    assert sorted(merged.stems[i] for i in merged.from_delta) == sorted(r.stem for r in changed)
    assert merged.base_stems == [r.stem for r in sorted(base_records)]
    for i, stem in enumerate(merged.stems):
        assert merged.meta(i) == new[stem].meta and merged.ex(i) == new[stem].ex
        assert merged.key(i) == bytes.fromhex(new[stem].key)


def test_a_delta_on_another_full_snapshot_does_not_apply() -> None:
    a, b = record("pkg/a", "pkg/a.py"), record("pkg/b", "pkg/b.py", "pkg/a")
    first, second = full([a, b]), full([a, b._replace(seq=3)])
    data = snapshot_delta.encode(first.checksum, ROOTS, LAYERS, [a._replace(seq=5)],
                                 options="o")
    delta = snapshot_delta.decode(data)
    assert delta is not None
    assert delta.applied(second) is None
    merged = delta.applied(first)
    assert merged is not None and as_set(merged)["pkg/a"].seq == 5
    assert merged.checksum == delta.checksum != first.checksum
    # and never on a snapshot that already has a delta
    assert delta.applied(merged) is None


def test_a_delta_of_other_roots_or_options_does_not_apply() -> None:
    a = record("pkg/a", "pkg/a.py")
    base = full([a])
    for roots, options in (({**ROOTS, "cwd": "/elsewhere"}, "o"), (ROOTS, "other")):
        delta = snapshot_delta.decode(snapshot_delta.encode(
            base.checksum, roots, LAYERS, [a._replace(seq=2)], options=options))
        assert delta is not None and delta.applied(base) is None


def test_damaged_deltas_are_no_delta() -> None:
    a = record("pkg/a", "pkg/a.py")
    data = snapshot_delta.encode(b"c" * 32, ROOTS, LAYERS, [a])
    assert snapshot_delta.decode(data) is not None
    for bad in (data[:-1], data[:40], data.replace(b"pkg/a", b"pkg/c"), b"", b"garbage",
                encode(ROOTS, LAYERS, [a])):
        assert snapshot_delta.decode(bad) is None


def test_compaction_threshold() -> None:
    assert not snapshot_delta.compact(64, 100)
    assert snapshot_delta.compact(65, 100)
    assert not snapshot_delta.compact(1250, 10_000)
    assert snapshot_delta.compact(1251, 10_000)


def test_a_delta_is_dead_once_its_full_snapshot_is_gone() -> None:
    from metastore.mypy.slot_kinds import RUN_SNAPSHOT_DELTA, dead
    a = record("pkg/a", "pkg/a.py")
    base = full([a])
    data = snapshot_delta.encode(base.checksum, ROOTS, LAYERS, [a._replace(seq=2)])
    kept = {snapshot_delta.full_key(base.checksum)}

    def judge(data: bytes, slots: set[bytes]) -> bool:
        return dead(RUN_SNAPSHOT_DELTA, data, slots.__contains__, lambda key: True,
                    lambda digests: True)
    assert not judge(data, kept)
    assert judge(data, set())
    assert judge(b"not a delta", kept)
