"""End-to-end: parallel workers, the JSON cache format, plugins and global options."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness, Product
from helpers.venvs import mypy_version

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()
PLUGIN = "plugins/magic_plugin.py"


def test_parallel_workers(installed_product: Product, tmp_path: Path) -> None:
    """``-n 2``: the workers (started by mypy as new interpreters) reach the store through the
    installed ``.pth`` hook: after a cold parallel run, a run with a new empty --cache-dir is
    fully warm, which it can only be if what the workers wrote went to the store."""
    h = Harness(tmp_path, installed_product, oracle_python=installed_product.python)
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    oracle_args: list[str] = []  # the oracle runs without workers
    v, s = h.check(h.dropin(proj, ["-n", "2"]), oracle_args=oracle_args)
    assert v.rechecked > 40 and s.published > 0 and s.meta_writes > 0
    h.check(h.dropin(proj, ["-n", "2"]), oracle_args=oracle_args, warm=True)
    h.check(h.dropin(proj, ["-n", "2"], cache_dir=h.fresh_cache_dir()), oracle_args=oracle_args,
            warm=True)
    # Serial runs reuse what the parallel run stored. Before 2.4, ``-n`` forces the native
    # parser on, and mypy caches per parser, so the serial run asks for it too.
    serial = [] if mypy_version() >= (2, 4) else ["--native-parser"]
    h.check(h.dropin(proj, serial, cache_dir=h.fresh_cache_dir()), warm=True)


def test_cache_fine_grained(harness: Harness, tmp_path: Path) -> None:
    """--cache-fine-grained: mypy's global entries (@deps.meta.json, @root.deps.json) and the
    per-module .deps.json entries reach the store, so a run with a new empty --cache-dir
    loads the fine-grained dependency cache and stays warm; an edit is re-checked exactly."""
    h = harness
    files = gen.generate(SPEC)
    proj = tmp_path / "proj"
    gen.write_tree(proj, files)
    args = ["--cache-fine-grained"]
    v, s = h.check(h.dropin(proj, args))
    assert v.rechecked > 40 and s.published > 0
    for cache_dir in (None, h.fresh_cache_dir()):
        run = h.dropin(proj, args, cache_dir=cache_dir)
        h.check(run, warm=True)
        assert "Could not load fine-grained dependency metadata" not in run.stderr
        assert "Falling back to full run" not in run.stderr
    gen.write_tree(proj, gen.edit_leaf(files, SPEC, 1))
    h.check(h.dropin(proj, args, cache_dir=h.fresh_cache_dir()), rechecked=1)


def test_no_fixed_format_cache(harness: Harness, tmp_path: Path) -> None:
    """The JSON cache format (--no-fixed-format-cache) works, and both formats stay warm on
    one store."""
    h = harness
    files = gen.generate(SPEC)
    proj = tmp_path / "proj"
    gen.write_tree(proj, files)
    json_args = ["--no-fixed-format-cache"]
    v, s = h.check(h.dropin(proj, json_args))
    assert v.rechecked > 40 and s.published > 0
    h.check(h.dropin(proj, json_args), warm=True)
    h.check(h.dropin(proj, json_args, cache_dir=h.fresh_cache_dir()), warm=True)
    gen.write_tree(proj, gen.edit_leaf(files, SPEC, 1))
    h.check(h.dropin(proj, json_args), rechecked=1)
    h.check(h.dropin(proj))  # fixed format: cold or warm, but exact
    h.check(h.dropin(proj), warm=True)
    h.check(h.dropin(proj, json_args), warm=True)


def test_plugin_added_and_changed(harness: Harness, tmp_path: Path) -> None:
    """A plugin added to mypy.ini, then its source changed: exact every time (the output
    depends on the plugin), warm after each change, and a plugin version seen before stays
    warm."""
    h = harness
    files = gen.generate(SPEC)
    proj = tmp_path / "proj"
    gen.write_tree(proj, files)
    h.check(h.dropin(proj))
    h.check(h.dropin(proj), warm=True)
    with_plugin = gen.with_config(files, SPEC, [f"plugins = {PLUGIN}"])
    for rtype in ("str", "bytes"):
        gen.write_tree(proj, {**with_plugin, PLUGIN: gen.plugin_source(rtype)})
        run = h.dropin(proj)
        v, _ = h.check(run)
        assert v.rechecked > 0, "a new plugin must invalidate the cache"
        assert f'(expression has type "{rtype}"' in run.stdout
        h.check(h.dropin(proj), warm=True)
    gen.write_tree(proj, {**with_plugin, PLUGIN: gen.plugin_source("str")})
    h.check(h.dropin(proj), warm=True)
    gen.write_tree(proj, files)  # plugin removed again
    h.check(h.dropin(proj), warm=True)


def test_global_option_changed_and_changed_back(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    strict = ["--disallow-untyped-defs"]
    h.check(h.dropin(proj))
    run = h.dropin(proj, strict)
    v, _ = h.check(run)
    assert v.rechecked > 40, "an option affecting every module re-checks every module"
    assert "loose.py" in run.stdout
    for _ in range(2):
        h.check(h.dropin(proj), warm=True)
        h.check(h.dropin(proj, strict), warm=True)
