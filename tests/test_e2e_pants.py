"""End-to-end: mypy as Pants runs it (tests/helpers/pants.py models the sandbox, the runner
script's copy dance, argv and environment), stock and with ``[mypy].console_script =
"mypy-metastore"``. The full profile with more rounds and a real tool venv per Python version
is ``tox -e pants`` (benchmarks/pants_sandbox.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import gen, pants
from helpers.run import CREATED_PREFIX, Product, Stats

pytestmark = pytest.mark.e2e


def _world(tmp_path: Path, product: Product) -> tuple[pants.PantsWorld, list[str]]:
    """Two Python versions if this machine has two (requirements venvs on each; mypy itself
    runs on the product's interpreter with ``--python-version``, as Pants does when
    ``[mypy].interpreter_constraints`` is set), two resolves."""
    if product.pythonpath is not None:
        pytest.skip("needs the product installed (its console script)")
    tool = pants.tool_for(product.python)
    try:
        tool.script("store")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    found = pants.find_interpreters()
    own = tool.python_version
    found[own] = product.python
    versions = [own] + [v for v in ("3.12", "3.13", "3.10") if v in found and v != own][:1]
    world = pants.PantsWorld(tmp_path / "pants", {v: tool for v in versions}, found)
    return world, versions


def test_pants_three_rounds_four_partitions_both_ways(tmp_path: Path,
                                                      installed_product: Product) -> None:
    """3 rounds (cold, no edit, leaf edit) of every resolve x Python version partition at once,
    stock (Pants' copy/rename of cache.db) and with the store: every output equals its oracle;
    with the store the unchanged round re-checks nothing in any partition (no thrash between
    resolves sharing first-party code), the leaf edit re-checks the leaf only, and never more
    than stock mypy on its own warm database."""
    world, versions = _world(tmp_path, installed_product)
    partitions = pants.default_partitions(versions)
    rounds = pants.run_campaign(world, partitions, ("cold", "no edit", "leaf edit"))
    assert not pants.campaign_problems(world, rounds), "\n".join(
        pants.campaign_problems(world, rounds))
    by = {(r.name, r.mode): r for r in rounds}
    # The campaign really did what it claims: cold runs checked everything, the leaf edit
    # reached every partition, the resolves' outputs differ.
    assert all(len(run.rechecked) > 40 for run in by["cold", "store"].runs)
    leaf = pants.leaf_module(world.spec)
    assert all(run.rechecked == (leaf,) for run in by["leaf edit", "stock"].runs)
    outs = {run.partition.resolve: run.result.stdout for run in by["cold", "store"].runs}
    assert outs["a"] != outs["b"]
    # Pants' copy dance: stock keeps one cache.db per resolve and version in the named cache;
    # with the store the dance finds no cache.db to copy back and leaves nothing behind.
    for p in partitions:
        assert (world.mypy_named_cache("stock") / world.cache_db(p)).is_file()
    store_named = world.mypy_named_cache("store")
    assert (store_named / "metastore.db").is_file()
    assert not list(store_named.rglob("cache.db*"))
    for run in by["no edit", "store"].runs:
        assert run.stats is not None and run.stats.offered > 0 and run.stats.missed == 0


def test_pants_store_in_the_config_file_and_dangling_named_cache(
        tmp_path: Path, installed_product: Product) -> None:
    """The store set in the mypy config file Pants puts in the sandbox (no ``[mypy].args``),
    the named cache not created yet (a dangling ``.cache/mypy_cache`` link): the store is
    created at the link's target, and the output equals the oracle's."""
    world, versions = _world(tmp_path, installed_product)
    world.write_sources(gen.generate(world.spec))
    part = pants.Partition("a", "a", versions[0])
    target = tmp_path / "not-yet" / "mypy_cache"
    config_store = (f"[mypy]\nwarn_unused_ignores = True\n\n[metastore]\n"
                    f"store = {pants.NAMED_CACHE_LINK}/metastore.db\nstats = true\n")
    pending, _ = world.start(part, "store", args=["-v"], named_cache=target, config=config_store)
    run = pending.wait()
    stats = Stats.parse(run.stderr)
    assert stats.store == str(target / "metastore.db") and (target / "metastore.db").is_file()
    oracle = world.oracle(part)
    assert (run.stdout, run.returncode) == (oracle.stdout, oracle.returncode), run.stderr[-2000:]
    # Besides the stats line, only the one note that the store's directory was created.
    assert [ln for ln in run.stderr.splitlines()
            if ln.startswith("mypy-metastore:") and "offered=" not in ln] == [
        f"{CREATED_PREFIX}{target} for the store {target / 'metastore.db'}"]
