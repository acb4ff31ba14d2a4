"""End-to-end: the store over time (issue 16): a run snapshot whose units were evicted is
never served with holes, a run that takes a snapshot touches its slots (in the top, never a
base), and a short soak of sandbox runs on one store with a small max_size (the long one,
with its curve, is benchmarks/soak.py). Real mypy, real SQLite, real processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness
from helpers.soak import soak

from metastore.store.api import TOUCH_GRAIN_S

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()


def _sql(store: Path, sql: str) -> list[tuple[object, ...]]:
    c = sqlite3.connect(str(store))
    try:
        rows = c.execute(sql).fetchall()
        c.commit()
        return rows
    finally:
        c.close()


def _gc(h: Harness, *args: str) -> None:
    import subprocess
    out = subprocess.run([h.product.python, "-m", "metastore.cli.admin", "--store",
                          str(h.store), "gc", *args], capture_output=True, text=True,
                         env=h._product_env(None))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("evicted", ["half", "all"])
def test_snapshot_whose_units_were_evicted_is_not_served_with_holes(
        harness: Harness, tmp_path: Path, evicted: str) -> None:
    """Evict units the run snapshot names (entries and, after the grace, their blobs) while
    the snapshot slot stays: the next run is exact, re-checks at least the evicted modules
    (their records are not served: nothing is offered that is gone), publishes them again,
    and the run after is warm."""
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    cold, _ = h.check(h.dropin(proj))
    h.check(h.dropin(proj), warm=True)
    entries = _sql(h.store, "SELECT count(*) FROM entries")[0][0]
    where = "seq % 2 = 0" if evicted == "half" else "1"
    n = _sql(h.store, f"SELECT count(*) FROM entries WHERE {where}")[0][0]
    assert isinstance(entries, int) and isinstance(n, int) and 0 < n <= entries
    # Old entries, fresh slots: gc --max-age evicts exactly those entries, and no slot.
    _sql(h.store, f"UPDATE entries SET used = 0 WHERE {where}")
    _sql(h.store, "UPDATE slots SET used = CAST(strftime('%s', 'now') AS INTEGER)")
    _gc(h, "--max-age", "1", "--grace", "0")
    assert _sql(h.store, "SELECT count(*) FROM entries")[0][0] == entries - n
    kinds = dict(_sql(h.store, "SELECT kind, count(*) FROM slots GROUP BY kind"))
    assert kinds.get("run-snapshot") == 1, kinds  # the snapshot is still there
    v, s = h.check(h.dropin(proj))
    assert v.rechecked >= n, f"{n} units evicted, {v.rechecked} re-checked"
    assert s.published >= n
    h.check(h.dropin(proj), warm=True)


def test_taking_a_snapshot_touches_its_slots_in_the_top_only(harness: Harness,
                                                             tmp_path: Path) -> None:
    """A warm run an hour and more after the snapshot was written marks the snapshot, its
    pointer and the units it serves used (last use moves to the run's clock); within the
    grain it writes no last use (the recording run used them all); the base the snapshot
    came from is never written."""
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    h.check(h.dropin(proj))
    used = dict(_sql(h.store, "SELECT kind, max(used) FROM slots WHERE kind LIKE '%snap%' "
                              "GROUP BY kind"))
    units = "SELECT seq, used FROM entries WHERE label != ''"
    units_used = dict(_sql(h.store, units))
    h.check(h.dropin(proj), warm=True)  # within the grain: nothing touched
    assert dict(_sql(h.store, "SELECT kind, max(used) FROM slots WHERE kind LIKE '%snap%' "
                              "GROUP BY kind")) == used
    assert dict(_sql(h.store, units)) == units_used
    later = {"METASTORE_CLOCK_OFFSET_S": str(TOUCH_GRAIN_S + 60)}
    h.check(h.dropin(proj, env=later), warm=True)
    after = dict(_sql(h.store, "SELECT kind, max(used) FROM slots WHERE kind LIKE '%snap%' "
                               "GROUP BY kind"))
    assert after.keys() == used.keys() and "run-snapshot" in after
    assert all(int(after[k]) >= int(used[k]) + TOUCH_GRAIN_S for k in used), (used, after)
    touched = dict(_sql(h.store, units))
    assert touched.keys() == units_used.keys() and all(
        int(touched[k]) >= int(units_used[k]) + TOUCH_GRAIN_S for k in units_used)
    # The same store as a read-only base under an empty top: taken, never written.
    base = h.store
    before = base.read_bytes()
    top = tmp_path / "top" / "store.db"
    h.check(h.dropin(proj, store=top, bases=[base], cache_dir=h.fresh_cache_dir(),
                     env={"METASTORE_CLOCK_OFFSET_S": str(3 * TOUCH_GRAIN_S)}), warm=True)
    assert base.read_bytes() == before


def test_short_soak_sandbox_runs_are_exact_and_warm_and_slots_are_evicted(
        harness: Harness) -> None:
    """30 sandbox runs (new path each, 3 versions, a leaf edit every 6 runs, an hour of
    store clock a run) on one store with max_size 4M: every output equals the oracle's,
    every run on content seen before is warm (asserted inside soak()), slots were evicted,
    and ``metastore verify`` is clean. (Flat growth is what benchmarks/soak.py measures and
    prints; trim works within a time budget, so a size bound here could be flaky.)"""
    import subprocess
    points = list(soak(harness, 30, max_size="4M"))
    assert sum(p.seen for p in points) == 15
    counters = dict(_sql(harness.store, "SELECT name, value FROM counters"))
    assert int(counters.get("evicted_slots", 0)) > 0, counters  # type: ignore[call-overload]
    out = subprocess.run([harness.product.python, "-m", "metastore.cli.admin", "--store",
                          str(harness.store), "verify"], capture_output=True, text=True,
                         env=harness._product_env(None))
    assert out.returncode == 0, out.stdout + out.stderr
