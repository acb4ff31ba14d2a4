"""End-to-end: units built by different runs combine (issue 17).

mypy's serialized data is not a function of a module's source alone: a type variable id
drawn from mypy's global counter (``TypeVarId.next_raw_id``, used when two generic
callables are joined) ends up in the data of ``shared.py`` below, and the counter depends on
what the process checked before. Two versions of the project that differ only in
``early.py`` (checked first; it does not import ``shared.py``) therefore leave two units for
the one source of ``shared.py``,
with different interface hashes, and every dependent records its own build's. A store
that chooses each module's unit in isolation strands the dependents (mypy: "stale due to
deps"); these tests hold the store to choosing consistent sets: after a merge, with bases
in either order, and in concurrent sandboxes, every run is exact and re-checks nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness
from helpers.stress import admin

pytestmark = pytest.mark.e2e

_SHARED = """\
from typing import TypeVar

T = TypeVar("T")


def f(x: T) -> T:
    return x


def g(x: T) -> T:
    return x


both = [f, g]
"""
_FILES = {
    "shared.py": _SHARED,
    "cyc1.py": "import shared\nimport cyc2\n\n\ndef one() -> int:\n    return 1\n",
    "cyc2.py": ("import cyc1\nfrom shared import both\n\nalias = both\n\n\n"
                "def two() -> int:\n    return cyc1.one()\n"),
    # mypy checks early.py before shared.py (their SCCs are independent) in this order
    "main.py": ("import shared\nimport early\nimport cyc1\n\nreveal_type(shared.both)\n"
                "x: str = cyc1.one()\n"),
}
#: early.py per version: B joins generic callables three times before shared.py is checked.
_EARLY = {
    "A": "x = 1\n",
    "B": ("from typing import TypeVar\n\nS = TypeVar(\"S\")\n\n\ndef p(x: S) -> S:\n"
          "    return x\n\n\ndef q(x: S) -> S:\n    return x\n\n\n"
          "h0 = [p, q]\nh1 = [p, q]\nh2 = [p, q]\nbad: int = 'b'\n"),
}
_ARGS = ["main.py"]


def _tree(root: Path, version: str) -> Path:
    gen.write_tree(root, {**_FILES, "early.py": _EARLY[version]})
    return root


def _cold_stores(h: Harness, tmp_path: Path) -> dict[str, Path]:
    """Each version checked cold on a store of its own, from a tree of its own; asserts the
    premise (the two builds' data of ``shared.py`` differ) with stock mypy."""
    stores = {}
    for version in "AB":
        stores[version] = tmp_path / f"s{version}" / "store.db"
        h.check(h.dropin(_tree(tmp_path / f"cold{version}", version), _ARGS,
                         store=stores[version], cache_dir=h.fresh_cache_dir()))
    data = {}
    for version in "AB":  # one directory, as the data may hold the module's path
        cache = tmp_path / f"stock-cache-{version}"
        h.stock(_tree(tmp_path / "stock", version), ["--sqlite-cache", *_ARGS],
                cache_dir=cache, verbose=False)
        data[version] = _entry(cache, "shared.data")
    assert data["A"] != data["B"], (
        "premise gone: this mypy serialises shared.py identically after either early.py; "
        "the test needs another source of build-dependent data")
    return stores


def _entry(cache_dir: Path, stem: str) -> bytes:
    """The bytes of mypy's cache entry ``stem.*`` (any format) in a stock SQLite cache."""
    for db in sorted(cache_dir.rglob("cache*.db")):
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT data FROM files2 WHERE path LIKE ?",
                                (stem + ".%",)).fetchall()
        conn.close()
        if rows:
            return bytes(rows[0][0])
    raise AssertionError(f"no entry {stem} in {cache_dir}")


def test_a_merged_store_is_warm_for_both_versions(harness: Harness, tmp_path: Path) -> None:
    h = harness
    stores = _cold_stores(h, tmp_path)
    merged = tmp_path / "merged" / "store.db"
    merged.parent.mkdir()
    out = admin(h, "--store", str(merged), "merge", str(stores["A"]), str(stores["B"]))
    assert out.returncode == 0, out
    for i, version in enumerate("BAB"):
        checkout = _tree(tmp_path / f"fresh{i}-{version}", version)
        h.check(h.dropin(checkout, _ARGS, store=merged, cache_dir=h.fresh_cache_dir()),
                warm=True)


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_stacked_bases_are_warm_in_either_order(harness: Harness, tmp_path: Path,
                                               order: str) -> None:
    h = harness
    stores = _cold_stores(h, tmp_path)
    bases = [stores[version] for version in order]
    for version in "AB":
        checkout = _tree(tmp_path / f"fresh-{version}", version)
        top = tmp_path / f"top-{version}" / "store.db"
        v, s = h.check(h.dropin(checkout, _ARGS, store=top, bases=bases,
                                cache_dir=h.fresh_cache_dir()), warm=True)
        assert s.layer_hits[0] == 0 and sum(s.layer_hits[1:]) == s.offered


def test_concurrent_partitions_in_fresh_sandboxes(harness: Harness, tmp_path: Path) -> None:
    """Two partitions of each version at once, every round in new sandboxes (new paths) on
    one shared store, as Pants runs them: round 1 is cold, every later round re-checks
    nothing in any partition."""
    h = harness
    store = tmp_path / "named-cache" / "store.db"
    for round_ in range(1, 4):
        pending = []
        for i, version in enumerate("AABB"):
            sandbox = _tree(tmp_path / f"round{round_}" / f"p{i}", version)
            pending.append(h.start_dropin(sandbox, _ARGS, store=store,
                                          cache_dir=sandbox / ".tmp_cache"))
        for run in (p.wait() for p in pending):
            h.check(run, warm=round_ > 1)
