"""Tests of the end-to-end harness itself, with stock mypy only (no product needed).

They prove that the parsers read real ``mypy -v`` output, that the generated projects have the
properties the product tests rely on (versions A and B differ in interface, so stock mypy on one
cache re-checks dependents on every switch; plugins and options change the output; the venvs
resolve the third-party package), and that the oracle comparison catches differences.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import gen, venvs
from helpers.run import (
    Harness,
    ParseError,
    RunResult,
    Stats,
    Verbose,
    clean_env,
    tree_digest,
)

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()
PROJECT_MODULES = sorted(gen.module_name(p) for p in gen.generate(SPEC) if p.endswith(".py"))


def _project(root: Path, files: gen.Files | None = None) -> Path:
    gen.write_tree(root, gen.generate(SPEC) if files is None else files)
    return root


def test_verbose_parser_on_real_mypy_output(stock_harness: Harness, tmp_path: Path) -> None:
    h = stock_harness
    proj = _project(tmp_path / "proj")
    cache = tmp_path / "cache"
    files = gen.generate(SPEC)

    cold = h.stock(proj, cache_dir=cache)
    h.assert_exact(cold)
    v = cold.verbose
    # Cold: every module loaded was checked, the project's and the stdlib's.
    assert v.rechecked == v.build_modules > len(PROJECT_MODULES)
    assert set(PROJECT_MODULES) <= set(v.rechecked_modules)
    assert len(v.rechecked_modules) == len(set(v.rechecked_modules))
    assert ("pkg2.cyc_a", "pkg2.cyc_b") in {tuple(sorted(s)) for s in v.sccs}
    assert any(len(s) > 2 and "builtins" in s for s in v.sccs)  # "SCC of size N" lines

    warm = h.stock(proj, cache_dir=cache)
    h.assert_exact(warm)
    assert (warm.verbose.rechecked, warm.verbose.build_modules) == (0, 0)

    gen.write_tree(proj, gen.edit_leaf(files, SPEC, 1))
    leaf = h.stock(proj, cache_dir=cache)
    h.assert_exact(leaf)
    assert leaf.verbose.rechecked_modules == (gen.module_name(gen.leaf_path(SPEC)),)
    assert leaf.verbose.build_modules > 0

    gen.write_tree(proj, gen.edit_core(gen.edit_leaf(files, SPEC, 1), 1))
    core = h.stock(proj, cache_dir=cache)
    h.assert_exact(core)
    assert "pkg0.core" in core.verbose.rechecked_modules
    assert core.verbose.rechecked > 20  # the core's dependents

    quiet = h.stock(proj, cache_dir=cache, verbose=False)
    assert quiet.stdout == core.stdout  # -v changes stderr only
    with pytest.raises(ParseError):
        quiet.verbose  # no "Build finished" line: never counts as 0 re-checked


def _stock_parallel_failed_by_itself(run: RunResult) -> bool:
    """Stock mypy 1.20's parallel mode sometimes loses a worker on its own (exit 2, "Error
    communicating with coordinator: [Errno 32] Broken pipe" on stdout; seen in tox -e mypy120
    with no store involved). Such a run says nothing about the parser: it is run again."""
    return (venvs.mypy_version() < (2, 0) and run.returncode == 2
            and "Error communicating with coordinator" in run.stdout)


def test_verbose_parser_with_parallel_workers(stock_harness: Harness, tmp_path: Path) -> None:
    """With ``-n 2`` the workers share stderr with the coordinator: a cold run still counts
    every module (three runs, since mixing lines depends on timing)."""
    h = stock_harness
    proj = _project(tmp_path / "proj")
    for i in range(3):
        cold = h.stock(proj, ["-n", "2"], cache_dir=tmp_path / f"cache{i}")
        for retry in range(2):
            if not _stock_parallel_failed_by_itself(cold):
                break
            shutil.rmtree(tmp_path / f"cache{i}", ignore_errors=True)
            cold = h.stock(proj, ["-n", "2"], cache_dir=tmp_path / f"cache{i}")
        h.assert_exact(cold, oracle_args=[])
        v = cold.verbose
        assert v.rechecked == v.build_modules > len(PROJECT_MODULES), cold.describe()
    warm = h.stock(proj, ["-n", "2"], cache_dir=tmp_path / "cache0")
    assert (warm.verbose.rechecked, warm.verbose.build_modules) == (0, 0)


def test_verbose_parser_rejects_inconsistent_lines() -> None:
    ok = ("LOG:  Scheduling SCC of size 2 (a b) as inherently stale\n"
          "LOG:  Scheduling SCC singleton (c) as stale due to deps (a)\n"
          "LOG:  Build finished in 0.1 seconds with 3 modules, and 0 errors\n")
    v = Verbose.parse(ok)
    assert (v.rechecked, v.rechecked_modules, v.build_modules) == (3, ("a", "b", "c"), 3)
    # A worker's unfinished "LOG: " before the coordinator's line still counts.
    assert Verbose.parse(ok.replace("LOG:  Scheduling SCC single", "LOG:  LOG:  Scheduling SCC "
                                    "single")) == v
    with pytest.raises(ParseError):
        Verbose.parse(ok.replace("size 2", "size 3"))
    with pytest.raises(ParseError):
        Verbose.parse(ok + ok)  # two builds


def test_stats_parser() -> None:
    line = ("mypy-metastore: offered=12 missed=3 rechecked=4 published=5 meta_writes=0 "
            "read_bytes=1024 written_bytes=77 store_seconds=0.125 layer_hits=2,10 "
            "ambiguous=7 search_steps=3 mismatched=1 select_seconds=0.002 "
            "store=/tmp/a b/store.db")
    s = Stats.parse(f"LOG:  x\n{line}\n")
    assert s == Stats(12, 3, 4, 5, 0, 1024, 77, 0.125, "/tmp/a b/store.db", (2, 10), 7, 3, 1,
                      0.002)
    with pytest.raises(ParseError):
        Stats.parse("LOG:  nothing\n")
    with pytest.raises(ParseError):
        Stats.parse(f"{line}\n{line}\n")
    with pytest.raises(ParseError):
        Stats.parse(line.replace(" meta_writes=0", ""))
    with pytest.raises(ParseError):
        Stats.parse(line.replace("offered=12", "offered=x"))
    with pytest.raises(ParseError):
        Stats.parse(line.replace("layer_hits=2,10", "layer_hits=2,9"))  # must add up
    with pytest.raises(ParseError):
        Stats.parse(line.replace(" layer_hits=2,10", ""))
    with pytest.raises(ParseError):
        Stats.parse(line.replace(" search_steps=3", ""))


def test_generator_is_deterministic_and_small() -> None:
    a = gen.generate(SPEC)
    assert a == gen.generate(gen.ProjectSpec())
    assert a != gen.generate(gen.ProjectSpec(seed=1))
    assert 30 <= len(PROJECT_MODULES) <= 60
    b = gen.version_b(a, SPEC)
    assert set(b) - set(a) == {gen.added_path(SPEC)}
    assert {p for p in a if a[p] != b[p]} == {gen.API}
    assert gen.version_b(a, SPEC) == b
    # Modules use the core from other packages.
    users = [p for p, t in a.items() if "from pkg0.core import" in t and not p.startswith("pkg0")]
    assert len(users) > 20


def test_oracle_outputs_of_versions(stock_harness: Harness, tmp_path: Path) -> None:
    h = stock_harness
    a = gen.generate(SPEC)
    pa = _project(tmp_path / "a", a)
    pb = _project(tmp_path / "b", gen.version_b(a, SPEC))
    oa, ob = h.oracle(pa), h.oracle(pb)
    assert oa.returncode == ob.returncode == 1
    assert oa.stdout.splitlines()[0].startswith("pkg1/broken.py:9: error: Incompatible types")
    assert '"int"' in oa.stdout and '"float"' in ob.stdout
    assert oa.stdout.count(": error:") == ob.stdout.count(": error:") == 1
    assert "checked 45 source files" in oa.stdout and "checked 46 source files" in ob.stdout
    # The leaf edit adds an error.
    gen.write_tree(pa, gen.edit_leaf(a, SPEC, 2))
    ol = h.oracle(pa)
    assert ol.stdout.count(": error:") == 3 and "leaf.py" in ol.stdout
    # Memoised on the tree's content.
    assert h.oracle(pa) is ol
    gen.write_tree(pa, a)
    assert h.oracle(pa) is oa


def test_oracle_comparison_catches_differences(stock_harness: Harness, tmp_path: Path) -> None:
    h = stock_harness
    a = gen.generate(SPEC)
    pa = _project(tmp_path / "a", a)
    cache = tmp_path / "cache"
    run = h.stock(pa, cache_dir=cache)
    h.assert_exact(run)
    gen.write_tree(pa, gen.version_b(a, SPEC))  # the oracle now sees B, run was on A
    with pytest.raises(AssertionError, match="output differs from the oracle"):
        h.assert_exact(run)


def test_stock_mypy_rechecks_dependents_on_each_switch(stock_harness: Harness,
                                                       tmp_path: Path) -> None:
    """The A/B versions make stock mypy sharing one cache re-check on every switch (so the
    product's 0 on runs 3 and 4 means something); stock incremental output is exact."""
    h = stock_harness
    a = gen.generate(SPEC)
    b = gen.version_b(a, SPEC)
    proj = tmp_path / "proj"
    cache = tmp_path / "cache"
    counts = []
    for files in (a, b, a, b):
        gen.write_tree(proj, files)
        run = h.stock(proj, cache_dir=cache)
        h.assert_exact(run)
        counts.append(run.verbose)
    for v in counts[1:]:
        assert "pkg1.api" in v.rechecked_modules
        assert "pkg1.broken" in v.rechecked_modules  # a dependent
        assert v.rechecked > 2


def test_write_tree_prunes_and_moves_mtimes_forward(tmp_path: Path) -> None:
    a = gen.generate(SPEC)
    b = gen.version_b(a, SPEC)
    proj = tmp_path / "p"
    assert len(gen.write_tree(proj, a)) == len(a)
    api = proj / gen.API
    m0 = api.stat().st_mtime_ns
    untouched = proj / gen.CORE
    c0 = untouched.stat().st_mtime_ns
    assert gen.write_tree(proj, b) == sorted([gen.API, gen.added_path(SPEC)])
    m1 = api.stat().st_mtime_ns
    assert gen.write_tree(proj, a) == sorted([gen.API, gen.added_path(SPEC)])
    assert not (proj / gen.added_path(SPEC)).exists()
    m2 = api.stat().st_mtime_ns
    assert m1 - m0 >= 2_000_000_000 and m2 - m1 >= 2_000_000_000
    assert untouched.stat().st_mtime_ns == c0
    assert gen.write_tree(proj, a) == []


def test_copy_tree_gives_fresh_mtimes(tmp_path: Path) -> None:
    src = _project(tmp_path / "src")
    dst = tmp_path / "elsewhere" / "copy"
    gen.copy_tree(src, dst)
    assert tree_digest(src) == tree_digest(dst)
    newest_src = max(p.stat().st_mtime_ns for p in src.rglob("*") if p.is_file())
    assert all(p.stat().st_mtime_ns > newest_src for p in dst.rglob("*") if p.is_file())


def test_clean_env_isolates_from_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYPY_METASTORE_STORE", "/nowhere/store.db")
    monkeypatch.setenv("MYPY_FORCE_COLOR", "1")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    env = clean_env(tmp_path)
    assert not [k for k in env if k.startswith("MYPY")]
    assert "PYTHONPATH" not in env
    assert env["HOME"].startswith(str(tmp_path)) and env["XDG_CACHE_HOME"].startswith(str(tmp_path))
    out = subprocess.run([sys.executable, "-c", "import os; print(os.path.expanduser('~'))"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == env["HOME"]
    assert clean_env(tmp_path, pythonpath="/src")["PYTHONPATH"] == "/src"


def test_thirdparty_venvs_resolve_the_package(stock_harness: Harness, tmp_path: Path) -> None:
    h = stock_harness
    spec = gen.ProjectSpec(thirdparty=True)
    proj = _project(tmp_path / "proj", gen.generate(spec))
    pythons = []
    for name in ("venv-one", "other/venv-two"):
        py = venvs.make_bare_venv(tmp_path / name)
        site_dir = venvs.install_files(py, gen.thirdparty_files())
        assert site_dir.is_relative_to(tmp_path)
        pythons.append(py)
    outs = [h.oracle(proj, ["--python-executable", str(py)]) for py in pythons]
    assert outs[0].stdout == outs[1].stdout
    assert 'uses_tp.py:5: error: Incompatible types in assignment (expression has type "float"' \
        in outs[0].stdout
    bare = h.oracle(proj, ["--python-executable", sys.executable])
    assert "import-not-found" in bare.stdout or "import-untyped" in bare.stdout


def test_plugin_and_options_change_the_output(stock_harness: Harness, tmp_path: Path) -> None:
    h = stock_harness
    a = gen.generate(SPEC)
    proj = _project(tmp_path / "proj", a)
    base = h.oracle(proj).stdout
    assert "magic_user" not in base
    with_plugin = gen.with_config(a, SPEC, ["plugins = plugins/magic_plugin.py"])
    outs = []
    for rtype in ("str", "bytes"):
        gen.write_tree(proj, {**with_plugin, "plugins/magic_plugin.py": gen.plugin_source(rtype)})
        out = h.oracle(proj)
        assert out.returncode == 1, out.describe()
        want = ('magic_user.py:3: error: Incompatible types in assignment '
                f'(expression has type "{rtype}"')
        assert want in out.stdout, out.describe()
        outs.append(out.stdout)
    assert outs[0] != outs[1]
    gen.write_tree(proj, a)
    strict = h.oracle(proj, ["--disallow-untyped-defs"]).stdout
    assert "loose.py" in strict and "loose.py" not in base


def test_runs_use_their_own_cache_dir_and_never_home(stock_harness: Harness,
                                                     tmp_path: Path) -> None:
    h = stock_harness
    proj = _project(tmp_path / "proj")
    cache = tmp_path / "cache"
    h.stock(proj, cache_dir=cache)
    assert (cache / f"{sys.version_info[0]}.{sys.version_info[1]}").is_dir()
    assert not (proj / ".mypy_cache").exists()
    home_files = [p for p in Path(h.env["HOME"]).rglob("*") if p.is_file()]
    assert home_files == []
    assert os.environ.get("HOME") != h.env["HOME"]
