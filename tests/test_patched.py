"""mypy with ``patches/mypy-2.4.1-pluggable-metastore.patch``: the ``--cache-store`` option.

Run by ``patches/apply-and-test`` (``tox -e patched``), which builds the interpreters and sets:

- ``METASTORE_PATCHED_PYTHON``: patched mypy (not compiled) with the product installed;
- ``METASTORE_STOCK_PYTHON``: stock mypy 2.4.1 from the package index (compiled wheel).

Without them every test here is skipped (the default suite has no patched mypy).
Plain ``python -m mypy`` is run with ``MYPY_METASTORE=0``, so the startup hook cannot install
the SQL seam: whatever the store does here, it does through the option.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import FORBIDDEN, Harness, Pending, Product, RunResult, Stats, Verbose

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not os.environ.get("METASTORE_PATCHED_PYTHON"),
    reason="needs METASTORE_PATCHED_PYTHON (patches/apply-and-test)")]

PATCHED = os.environ.get("METASTORE_PATCHED_PYTHON", "")
STOCK = os.environ.get("METASTORE_STOCK_PYTHON", "")
FACTORY = "metastore.seams.cache_store:create"
SPEC = gen.ProjectSpec()


@pytest.fixture()
def h(tmp_path: Path) -> Harness:
    """A harness whose oracle is the patched mypy (without the option)."""
    return Harness(tmp_path / "h", Product(PATCHED, None, "patched mypy"), oracle_python=PATCHED)


def _mypy(h: Harness, cwd: Path, args: Sequence[str], *, python: str = "",
          env: Mapping[str, str] | None = None) -> RunResult:
    """``python -m mypy args`` in ``cwd`` (the store's settings in ``env``)."""
    py = python or PATCHED
    full_env = dict(h.env)
    full_env.update(env or {})
    return Pending([py, "-m", "mypy", *args], cwd, full_env, args, "dropin", py,
                   h.timeout).wait()


def _store_env(h: Harness) -> dict[str, str]:
    return {"MYPY_METASTORE": "0", "MYPY_METASTORE_STORE": str(h.store),
            "MYPY_METASTORE_STATS": "1"}


def _exact(h: Harness, run: RunResult, oracle_args: Sequence[str] = ()) -> tuple[Verbose, Stats]:
    """Clean stderr, output equal to the oracle's, one stats line naming the store."""
    h.assert_clean(run)
    h.assert_exact(run, oracle_args=oracle_args)
    v, s = run.verbose, run.stats
    assert os.path.realpath(s.store) == os.path.realpath(h.store), run.describe()
    assert s.rechecked == v.rechecked, f"stats and -v disagree: {s} {v.rechecked}"
    return v, s


def _no_mypy_cache_db(cache_dir: Path) -> None:
    dbs = sorted(p.name for p in cache_dir.rglob("cache*.db"))
    assert not dbs, f"mypy's own SQLite cache was used: {dbs} in {cache_dir}"


def _cache_rows(cache_dir: Path) -> dict[str, bytes]:
    """Every entry of mypy's own SQLite cache (all shards) by name."""
    rows: dict[str, bytes] = {}
    for db in sorted(cache_dir.rglob("cache*.db")):
        con = sqlite3.connect(db)
        try:
            rows.update((path, bytes(data)) for path, data in
                        con.execute("SELECT path, data FROM files2"))
        finally:
            con.close()
    return rows


@pytest.mark.skipif(not STOCK, reason="needs METASTORE_STOCK_PYTHON")
def test_without_the_option_patched_mypy_is_stock_mypy(h: Harness, tmp_path: Path) -> None:
    """Same output, exit status, re-checked modules and cache entries as stock mypy 2.4.1,
    over a cold run, an edit and a warm run (each mypy on its own copy and cache dir)."""
    files = gen.generate(SPEC)
    results: dict[str, list[tuple[int, str, tuple[str, ...]]]] = {}
    caches: dict[str, dict[str, bytes]] = {}
    for name, python in (("stock", STOCK), ("patched", PATCHED)):
        proj = tmp_path / name / "proj"
        gen.write_tree(proj, files)
        cache = tmp_path / name / "cache"
        steps = []
        for step in ("cold", "edit", "warm"):
            if step == "edit":
                gen.write_tree(proj, gen.edit_leaf(files, SPEC))
            run = _mypy(h, proj, ["-v", f"--cache-dir={cache}"], python=python)
            for bad in FORBIDDEN:
                assert bad not in run.stderr, run.describe()
            # Modules in the order mypy schedules them can differ between compiled and
            # interpreted mypy (set iteration); which modules are re-checked cannot.
            steps.append((run.returncode, run.stdout,
                          tuple(sorted(run.verbose.rechecked_modules))))
        results[name] = steps
        caches[name] = _cache_rows(cache)
    assert results["patched"] == results["stock"]
    assert results["patched"][2][2] == (), "the warm run re-checked modules"
    stock, patched = caches["stock"], caches["patched"]
    assert len(stock) > 40 and sorted(patched) == sorted(stock)
    # The project's data entries are byte-identical. (Metas record when their data entry was
    # written; typeshed's entries embed the path of mypy's own venv, which differs.)
    data = [name for name in stock if ".data." in name and name.startswith("pkg")]
    assert len(data) > 30
    assert [n for n in data if patched[n] != stock[n]] == []


def test_option_cold_then_warm_from_the_store_alone(h: Harness, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    cache = tmp_path / "cache1"
    args = ["-v", "--cache-store", FACTORY, f"--cache-dir={cache}"]
    v, s = _exact(h, _mypy(h, proj, args, env=_store_env(h)))
    assert v.rechecked > 40 and s.published > 0 and s.written_bytes > 0, s
    _no_mypy_cache_db(cache)
    # A new, empty --cache-dir: whatever is warm came from the store through the option.
    fresh = tmp_path / "cache2"
    v, s = _exact(h, _mypy(h, proj, ["-v", "--cache-store", FACTORY, f"--cache-dir={fresh}"],
                           env=_store_env(h)))
    assert v.rechecked == 0 and v.build_modules == 0, (v, s)
    assert s.offered > 0 and s.missed == 0 and s.meta_writes == 0, s
    _no_mypy_cache_db(fresh)


def test_config_key_and_an_edit(h: Harness, tmp_path: Path) -> None:
    """``cache_store`` in ``[mypy]`` of mypy.ini; an edited leaf re-checks only the leaf."""
    files = gen.with_config(gen.generate(SPEC), SPEC, [f"cache_store = {FACTORY}"])
    proj = tmp_path / "proj"
    gen.write_tree(proj, files)
    args = ["-v", f"--cache-dir={tmp_path / 'cache'}"]
    _exact(h, _mypy(h, proj, args, env=_store_env(h)))
    gen.write_tree(proj, gen.edit_leaf(files, SPEC))
    v, s = _exact(h, _mypy(h, proj, args, env=_store_env(h)))
    assert v.rechecked_modules == (gen.module_name(gen.leaf_path(SPEC)),), v
    assert s.published == 1, s
    v, s = _exact(h, _mypy(h, proj, ["-v", f"--cache-dir={tmp_path / 'cache2'}"],
                           env=_store_env(h)))
    assert v.rechecked == 0 and s.offered > 0 and s.missed == 0, (v, s)


def test_option_with_parallel_workers(h: Harness, tmp_path: Path) -> None:
    """``-n 2``: the coordinator and each worker call the factory; exact, then warm."""
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    for n, cache in enumerate(("cache1", "cache2")):
        args = ["-n", "2", "-v", "--cache-store", FACTORY, f"--cache-dir={tmp_path / cache}"]
        run = _mypy(h, proj, args, env=_store_env(h))
        h.assert_clean(run)
        h.assert_exact(run, oracle_args=[])  # the oracle runs without workers
        s = run.stats
        if n == 0:
            assert s.published > 40, s
        else:
            assert s.offered > 40 and s.missed == 0 and s.rechecked == 0, s
        _no_mypy_cache_db(tmp_path / cache)


def test_unimportable_factory_is_one_line(h: Harness, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    run = _mypy(h, proj, ["--cache-store", "metastore.no_such_module:create"])
    assert run.returncode == 2, run.describe()
    assert "Traceback" not in run.stderr + run.stdout, run.describe()
    errors = [ln for ln in run.stderr.splitlines() if "error" in ln]
    assert errors == ['mypy: error: Error importing cache store '
                      '"metastore.no_such_module:create": '
                      "No module named 'metastore.no_such_module'"], run.describe()


def test_unusable_store_one_line_and_mypy_runs_without_it(h: Harness, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not an SQLite database" * 100)
    env = dict(_store_env(h), MYPY_METASTORE_STORE=str(bad))
    run = _mypy(h, proj, ["--cache-store", FACTORY, f"--cache-dir={tmp_path / 'c'}"], env=env)
    h.assert_exact(run, oracle_args=[])
    ours = [ln for ln in run.stderr.splitlines() if ln.startswith("mypy-metastore:")]
    assert len(ours) == 1 and "running mypy without the store" in ours[0], run.describe()
    assert "Traceback" not in run.stderr, run.describe()


def test_patched_interpreter_really_has_the_option() -> None:
    """Guards the rest: the interpreter under test is the patched, uncompiled mypy."""
    out = subprocess.run(
        [PATCHED, "-c", "import mypy.options, mypy.metastore as m, mypy.version as v; "
         "print(v.__version__, hasattr(mypy.options.Options(), 'cache_store'), "
         "hasattr(m.MetadataStore, 'attach_build'))"],
        capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["2.4.1", "True", "True"], out.stdout


@pytest.mark.parametrize("via", ["cache-store", ""])
def test_dropin_via_the_option_never_imports_the_seam(h: Harness, tmp_path: Path,
                                                      via: str) -> None:
    """What ``METASTORE_E2E_VIA=cache-store`` selects: the drop-in passes ``--cache-store``;
    no process of the build (coordinator, two workers) imports ``metastore.seams.sql``, yet the
    store is used. The control run (the default, the seam) shows the probe sees the seam
    when it is there."""
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    env = {"MYPY_METASTORE_VIA": via, "PYTHONPROFILEIMPORTTIME": "1"}
    run = h.dropin(proj, ["-n", "2"], env=env)
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in run.stderr.splitlines()
                if ln.startswith("import time:")}
    # (mypy imports the factory's module with importlib.import_module, which -X importtime
    # does not report; the mypy layer it loads is reported.)
    assert "metastore.mypy.protocol" in imported
    assert ("metastore.seams.sql" in imported) == (not via)
    h.assert_exact(run, oracle_args=[])
    assert run.stats.published > 40, run.stats
