"""End-to-end: the drop-in on real projects, compared with the oracle (``mypy --no-incremental``).

Every run is checked by :meth:`Harness.check`: stdout and exit status equal the oracle's on the
same tree, stderr clean, one stats line naming the store used, and the number of modules
re-checked (from ``mypy -v``) as claimed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import gen, venvs
from helpers.run import Harness, snapshot_lines

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()


def _cold(h: Harness, proj: Path, args: list[str] | None = None) -> None:
    run = h.dropin(proj, args or [])
    v, s = h.check(run)
    assert v.rechecked > 40, "a cold run checks every module"
    assert s.published > 0 and s.written_bytes > 0, f"cold run published nothing: {s}"
    assert s.meta_writes > 0, f"cold run: mypy wrote no meta? {s}"


def test_cold_then_warm(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    _cold(h, proj)
    assert h.store.exists()
    h.check(h.dropin(proj), warm=True)
    # Warm from the store alone: a new, empty --cache-dir.
    h.check(h.dropin(proj, cache_dir=h.fresh_cache_dir()), warm=True)
    # The flag's store was used, never the default one under $XDG_CACHE_HOME.
    assert not (Path(h.env["XDG_CACHE_HOME"]) / "mypy-metastore").exists()


def test_edit_leaf_module(harness: Harness, tmp_path: Path) -> None:
    h = harness
    files = gen.generate(SPEC)
    proj = tmp_path / "proj"
    gen.write_tree(proj, files)
    _cold(h, proj)
    for n in (1, 2):
        gen.write_tree(proj, gen.edit_leaf(files, SPEC, n))
        v, s = h.check(h.dropin(proj), rechecked=1)
        assert v.rechecked_modules == (gen.module_name(gen.leaf_path(SPEC)),)
        assert s.published >= 1
        h.check(h.dropin(proj), warm=True)


def test_edit_core_interface(harness: Harness, tmp_path: Path) -> None:
    """An interface change re-checks exactly what stock mypy re-checks, and is exact."""
    h = harness
    files = gen.generate(SPEC)
    proj = tmp_path / "proj"
    ref = tmp_path / "ref"
    gen.write_tree(proj, files)
    gen.write_tree(ref, files)
    ref_cache = tmp_path / "ref-cache"
    h.stock(ref, cache_dir=ref_cache)
    _cold(h, proj)
    edited = gen.edit_core(files, 1)
    gen.write_tree(proj, edited)
    gen.write_tree(ref, edited)
    stock = h.stock(ref, cache_dir=ref_cache).verbose
    assert stock.rechecked > 20
    v, _ = h.check(h.dropin(proj))
    assert sorted(v.rechecked_modules) == sorted(stock.rechecked_modules)
    h.check(h.dropin(proj), warm=True)


def test_alternate_two_versions(harness: Harness, tmp_path: Path) -> None:
    """A B A B on one store in one directory: exact; runs 3 and 4 are fully warm (stock mypy
    re-checks api and its dependents there, see test_e2e_harness)."""
    h = harness
    a = gen.generate(SPEC)
    b = gen.version_b(a, SPEC)
    proj = tmp_path / "proj"
    for i, files in enumerate((a, b, a, b, a), start=1):
        gen.write_tree(proj, files)
        run = h.dropin(proj)
        if i == 1:
            h.check(run)
        elif i == 2:
            v, _ = h.check(run)
            assert "pkg1.api" in v.rechecked_modules and "pkg1.broken" in v.rechecked_modules
        else:
            h.check(run, warm=True)


def test_copy_at_another_path_with_fresh_mtimes(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    _cold(h, proj)
    h.check(h.dropin(proj), warm=True)
    copy = tmp_path / "sandbox" / "deeper" / "proj"
    gen.copy_tree(proj, copy)
    h.check(h.dropin(copy, cache_dir=h.fresh_cache_dir()), warm=True)
    # And the original is still warm afterwards.
    h.check(h.dropin(proj), warm=True)


def test_second_virtualenv_at_another_path(harness: Harness, tmp_path: Path) -> None:
    """The same third-party package in two venvs at different paths: after the first venv
    is warm, the second is warm too, and mypy rewrites no meta."""
    h = harness
    spec = gen.ProjectSpec(thirdparty=True)
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(spec))
    pythons = []
    for i, name in enumerate(("envs/one", "elsewhere/envs/two")):
        py = venvs.make_bare_venv(tmp_path / name)
        site_dir = venvs.install_files(py, gen.thirdparty_files())
        for rel in gen.thirdparty_files():  # venv two's files get other, later mtimes
            t = (site_dir / rel).stat().st_mtime_ns + i * 100_000_000_000
            os.utime(site_dir / rel, ns=(t, t))
        pythons.append(py)
    args1 = ["--python-executable", str(pythons[0])]
    args2 = ["--python-executable", str(pythons[1])]
    first = h.dropin(proj, args1)
    h.check(first)
    assert "uses_tp.py" in first.stdout  # the error that needs the third-party types
    h.check(h.dropin(proj, args1), warm=True)
    h.check(h.dropin(proj, args2, cache_dir=h.fresh_cache_dir()), warm=True)
    h.check(h.dropin(proj, args2), warm=True)


def test_two_versions_of_a_thirdparty_package_alternate_warm(harness: Harness,
                                                            tmp_path: Path) -> None:
    """Two venvs holding different versions of ``thirdparty_pkg`` (two Pants resolves), one
    project, one store: once each has run, every further run of either is fully warm. The
    importing module is checked before mypy has located its third-party dependencies, so the
    choice among its two units must look those up (else one venv re-checks it every time)."""
    from helpers.pants import thirdparty_files

    h = harness
    spec = gen.ProjectSpec(thirdparty=True)
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(spec))
    args = []
    for resolve in ("a", "b"):
        py = venvs.make_bare_venv(tmp_path / f"venv-{resolve}")
        venvs.install_files(py, thirdparty_files(resolve))
        args.append(["--python-executable", str(py)])
    first, second = h.dropin(proj, args[0]), h.dropin(proj, args[1])
    h.check(first)
    h.check(second, rechecked=4)  # thirdparty_pkg, .shapes, .util and the module using them
    assert h.normalise(first.stdout) != h.normalise(second.stdout)
    for a in (args[0], args[1], args[0], args[1]):
        h.check(h.dropin(proj, a), warm=True)


def test_edited_module_gets_its_previous_meta_like_stock(harness: Harness, tmp_path: Path) -> None:
    """After an edit, mypy sees what it sees with its own cache: the edited module's previous
    meta, which it loads (learning the old interface hash, so it reports the module stale
    only if the interface changed - what mypy's own ``[stale]`` test expectations check)
    and abandons (the store patches in a size that cannot match the file). It re-checks
    exactly what stock incremental mypy re-checks."""
    h = harness
    proj = tmp_path / "proj"
    files = gen.generate(SPEC)
    gen.write_tree(proj, files)
    stock_cache = tmp_path / "stock-cache"
    _cold(h, proj)
    h.assert_exact(h.stock(proj, cache_dir=stock_cache), oracle_args=[])
    body_only = dict(files)
    body_only[gen.CORE] = files[gen.CORE].replace("return x * 2", "return 2 * x")
    assert body_only[gen.CORE] != files[gen.CORE]
    for version, expected in ((body_only, 1), (gen.edit_core(files, 1), None)):
        gen.write_tree(proj, version)
        stock = h.stock(proj, cache_dir=stock_cache)
        h.assert_exact(stock, oracle_args=[])
        if expected is not None:
            assert stock.verbose.rechecked == expected, stock.verbose.rechecked_modules
        else:
            assert stock.verbose.rechecked > 20  # the interface changed: its dependents too
        # From the store alone (a new --cache-dir), as many modules as stock mypy.
        run = h.dropin(proj, cache_dir=h.fresh_cache_dir())
        v, s = h.check(run, rechecked=stock.verbose.rechecked)
        assert s.missed == 1, s
        abandoned = [line for line in run.stderr.splitlines() if "Metadata abandoned" in line]
        assert len(abandoned) == 1 and "pkg0.core: file" in abandoned[0], abandoned
        h.check(h.dropin(proj, cache_dir=h.fresh_cache_dir()), warm=True)


def _project_with_debug_log(tmp_path: Path) -> tuple[Path, gen.Files, Path, dict[str, str]]:
    """The generated project in ``tmp_path/proj``, its files, and a developer log with the
    environment that turns it on."""
    proj = tmp_path / "proj"
    files = gen.generate(SPEC)
    gen.write_tree(proj, files)
    log = tmp_path / "debug.log"
    return proj, files, log, {"MYPY_METASTORE_DEBUG_LOG": str(log)}


def _snapshot_offers(log: Path) -> list[int]:
    """How many units each run offered from the run snapshot (the developer log)."""
    return [offered for _, _, _, offered in snapshot_lines(log)]


def test_run_snapshot_offers_only_files_whose_stat_is_unchanged(harness: Harness,
                                                                 tmp_path: Path) -> None:
    """A warm run of an unchanged tree takes its units from the previous run's snapshot;
    a file whose content changed is never taken from it - not even one edited to the same
    size with its mtime put back (its ctime still moves) - nor a file changed within the
    timestamp granularity of the run that recorded it."""
    h = harness
    proj, _, log, env = _project_with_debug_log(tmp_path)
    _cold(h, proj)
    time.sleep(2.2)  # older than the racy window: stats can be recorded
    h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()), warm=True)  # records
    h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()), warm=True)  # uses
    second = _snapshot_offers(log)[-1]  # the cold run's knew the racy files by content
    assert second > 40, _snapshot_offers(log)

    leaf = proj / gen.leaf_path(SPEC)
    before = leaf.stat()
    text = leaf.read_text()
    edited = text.replace("total = 0", "total = 1", 1)
    assert len(edited) == len(text) and edited != text
    leaf.write_text(edited)
    os.utime(leaf, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert leaf.stat().st_size == before.st_size
    assert leaf.stat().st_mtime_ns == before.st_mtime_ns
    v, s = h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()))
    assert gen.module_name(gen.leaf_path(SPEC)) in v.rechecked_modules, v.rechecked_modules
    assert _snapshot_offers(log)[-1] == second - 1


def test_an_edit_keeping_the_interface_leaves_the_dependents_to_the_snapshot(
        harness: Harness, tmp_path: Path) -> None:
    """The core module, imported by nearly every module, edited in its body only: its
    dependents' records still hold (mypy keeps the core's recorded interface hash from its
    previous unit), so they are offered from the run snapshot - every record but the core's
    - and only the core is re-checked. An edit of its interface is re-checked with its
    dependents, exactly as without the store; reverting to the first version is warm."""
    h = harness
    proj, files, log, env = _project_with_debug_log(tmp_path)
    _cold(h, proj)
    time.sleep(0.2)  # older than the racy window of sub-second timestamps
    h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()), warm=True)  # records
    kind, records, _, offered = snapshot_lines(log)[-1]
    assert kind == "here" and offered == records > 40, snapshot_lines(log)

    body_only = dict(files)
    body_only[gen.CORE] = files[gen.CORE].replace("return x * 2", "return 2 * x")
    assert body_only[gen.CORE] != files[gen.CORE]
    gen.write_tree(proj, body_only)
    v, _ = h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()), rechecked=1)
    assert v.rechecked_modules == ("pkg0.core",), v.rechecked_modules
    assert snapshot_lines(log)[-1] == ("here", records, 1, records - 1), snapshot_lines(log)

    gen.write_tree(proj, gen.edit_core(files, 1))
    v, _ = h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()))
    assert v.rechecked > 20, "the interface changed: its dependents too"
    gen.write_tree(proj, files)
    h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()), warm=True)


def test_a_copy_of_the_tree_takes_the_snapshot_by_content(harness: Harness,
                                                          tmp_path: Path) -> None:
    """A checkout at another path (other inodes, fresh mtimes) has no snapshot of its own:
    it takes the last one written by any checkout (the portable slot), proving each record
    by the content key of its file there - so a file that differs in the copy is not taken
    from it, even one recorded in the same run as a file whose stat was too recent to be
    trusted. The copy then has its own snapshot."""
    h = harness
    proj, files, log, env = _project_with_debug_log(tmp_path)
    h.check(h.dropin(proj, env=env))  # its files are too recent for their stat to be trusted

    same = tmp_path / "same"
    shutil.copytree(proj, same)
    h.check(h.dropin(same, env=env, cache_dir=h.fresh_cache_dir()), warm=True)
    kind, records, compared, offered = snapshot_lines(log)[-1]
    assert kind == "portable" and records > 40 and offered == records, snapshot_lines(log)
    modules = [p for p in files if p.startswith("pkg") and p.endswith((".py", ".pyi"))]
    assert compared >= len(modules), "project files are another checkout's: compared"
    h.check(h.dropin(same, env=env, cache_dir=h.fresh_cache_dir()), warm=True)
    assert snapshot_lines(log)[-1][0] == "here"

    edited = tmp_path / "edited"
    shutil.copytree(proj, edited)
    leaf = gen.leaf_path(SPEC)
    (edited / leaf).write_text(gen.edit_leaf(files, SPEC, 1)[leaf])
    v, _ = h.check(h.dropin(edited, env=env, cache_dir=h.fresh_cache_dir()))
    assert gen.module_name(leaf) in v.rechecked_modules, v.rechecked_modules
    kind, records, compared, offered = snapshot_lines(log)[-1]
    assert kind == "portable" and offered == records - 1, snapshot_lines(log)


def _slots_starting_with(store: Path, prefix: bytes) -> list[int]:
    """Sizes of the store's slots whose value starts with ``prefix``."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(store)) as c:
        return [n for (n,) in c.execute(
            "SELECT length(data) FROM slots WHERE substr(data, 1, ?) = ?",
            (len(prefix), prefix))]


def test_a_new_checkout_records_its_snapshot_derived_from_the_one_it_took(
        harness: Harness, tmp_path: Path) -> None:
    """A checkout that took every record of another checkout's snapshot by content records
    only its roots and stat signatures, against that snapshot (a derived snapshot, a few
    bytes a record); its next runs are served from it by stat. Once the other checkout's
    snapshot changes, the derived one no longer holds and the checkout is served as a new
    one again - exact all along."""
    from metastore.mypy.run_snapshot import DERIVED_MAGIC, MAGIC

    h = harness
    proj, files, log, env = _project_with_debug_log(tmp_path)
    _cold(h, proj)
    time.sleep(0.2)  # older than the racy window of sub-second timestamps
    h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()), warm=True)
    full = _slots_starting_with(h.store, MAGIC)
    assert len(full) == 1, full

    copy = tmp_path / "copy"
    shutil.copytree(proj, copy)
    time.sleep(0.2)
    h.check(h.dropin(copy, env=env, cache_dir=h.fresh_cache_dir()), warm=True)
    kind, records, compared, offered = snapshot_lines(log)[-1]
    assert kind == "portable" and compared > 40 and offered == records, snapshot_lines(log)
    derived = _slots_starting_with(h.store, DERIVED_MAGIC)
    assert len(derived) == 1 and derived[0] < full[0] / 10, (derived, full)
    assert len(_slots_starting_with(h.store, MAGIC)) == 1, "no second full snapshot"
    h.check(h.dropin(copy, env=env, cache_dir=h.fresh_cache_dir()), warm=True)
    assert snapshot_lines(log)[-1] == ("here", records, 0, records), snapshot_lines(log)

    leaf = gen.leaf_path(SPEC)
    gen.write_tree(proj, gen.edit_leaf(files, SPEC, 1))  # the first checkout moves on
    h.check(h.dropin(proj, env=env, cache_dir=h.fresh_cache_dir()))
    v, _ = h.check(h.dropin(copy, env=env, cache_dir=h.fresh_cache_dir()), warm=True)
    kind, _, compared, offered = snapshot_lines(log)[-1]
    assert kind == "portable" and compared > 40, snapshot_lines(log)
    assert gen.module_name(leaf) not in v.rechecked_modules


def test_the_previous_unit_is_the_one_the_last_run_had(harness: Harness,
                                                       tmp_path: Path) -> None:
    """Versions A, B, A, then C of a leaf, where B changes its interface and C only its
    body (mypy's testIncrementalInternalChangeOnly after a branch switch). The third run is
    served wholly by the store and publishes nothing; for the fourth, the leaf's previous
    unit is A's (what the last run had, as in mypy's own cache), not B's (the last one
    published from that file), so only the leaf is re-checked."""
    h = harness
    proj = tmp_path / "proj"
    files = {"main.py": "import mod1\nmod1.func1()\n",
             "mod1.py": "import mod2\ndef func1() -> None: mod2.func2()\n",
             "mod2.py": "import mod3\ndef func2() -> None: mod3.func3()\n",
             "mod3.py": "def func3() -> None: pass\n"}
    b = {**files, "mod3.py": "def func3(x: int = 0) -> None: pass\n"}
    c = {**files, "mod3.py": "def func3() -> None: 3 + 2\n"}
    gen.write_tree(proj, files)
    h.check(h.dropin(proj, ["main.py"]))
    gen.write_tree(proj, b)
    v, _ = h.check(h.dropin(proj, ["main.py"]))
    assert "mod2" in v.rechecked_modules, "B changes the leaf's interface"
    gen.write_tree(proj, files)
    _, s = h.check(h.dropin(proj, ["main.py"]), warm=True)
    assert s.published == 0
    gen.write_tree(proj, c)
    v, _ = h.check(h.dropin(proj, ["main.py"]), rechecked=1)
    assert v.rechecked_modules == ("mod3",), v.rechecked_modules


def test_shadow_file_is_the_source_of_its_module(harness: Harness, tmp_path: Path) -> None:
    """With ``--shadow-file SOURCE SHADOW`` mypy checks SHADOW's text for SOURCE and records
    SHADOW's hash, mtime and size: units are keyed and offered on the shadow's content, so a
    shadowed module is warm on the next run, and never confused with the file on disk."""
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, {"a.py": "x: int = 1\nreveal_type(x)\n", "b.py": "y: int = 2\n",
                          "a_shadow.py": 'x: str = "y"\nreveal_type(x)\n'})
    shadow = ["--shadow-file", "a.py", "a_shadow.py", "a.py", "b.py"]
    plain = ["a.py", "b.py"]
    v, _ = h.check(h.dropin(proj, shadow))
    assert 'Revealed type is "str"' in h.dropin(proj, shadow).stdout
    h.check(h.dropin(proj, shadow, cache_dir=h.fresh_cache_dir()), warm=True)
    # The file on disk (int) is a different source: re-checked, then warm too.
    v, _ = h.check(h.dropin(proj, plain, cache_dir=h.fresh_cache_dir()), rechecked=1)
    h.check(h.dropin(proj, plain, cache_dir=h.fresh_cache_dir()), warm=True)
    h.check(h.dropin(proj, shadow, cache_dir=h.fresh_cache_dir()), warm=True)


def test_a_run_served_by_the_store_creates_no_cache_directory(harness: Harness,
                                                              tmp_path: Path) -> None:
    """mypy creates ``<cache-dir>/<X.Y>`` before it opens its cache, and at the end of the
    build writes ``.gitignore`` and ``CACHEDIR.TAG`` into ``<cache-dir>`` if it exists; with
    the store serving the build neither is left behind (a sandbox stays as it was)."""
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    before = sorted(p.name for p in proj.iterdir())
    cache = proj / ".mypy_cache"
    v, s = h.check(h.dropin(proj, cache_dir=cache))
    assert v.rechecked > 40 and s.published > 0
    assert not cache.exists(), f"the cold run left {sorted(os.listdir(cache))} in {cache}"
    h.check(h.dropin(proj, cache_dir=cache), warm=True)
    h.check(h.dropin(proj, cache_dir=proj / "deeper" / "cache"), warm=True)
    assert sorted(p.name for p in proj.iterdir()) == before
    # The same run without the store creates the directory: the check above means something.
    stock = h.stock(proj, cache_dir=cache)
    assert stock.returncode in (0, 1), stock.stderr
    assert (cache / ".gitignore").exists() and (cache / "CACHEDIR.TAG").exists()


def test_a_module_named_on_the_command_line_is_warm_when_imported(harness: Harness,
                                                                  tmp_path: Path) -> None:
    """pre-commit's pattern: the first commit passes every file, later ones only the files
    they change. A module named on the command line is at the path given there
    (``pkg1/broken.py``); reached by an import it is at the finder's (absolute) path: the
    same file, so its unit is served (mypy itself only re-hashes the file and keeps its
    meta), and the other way round; each output is the oracle's, the error of the imported
    module included."""
    h = harness
    proj = tmp_path / "proj"
    files = gen.generate(SPEC)
    files["pkg3/uses_broken.py"] = "import pkg1.broken\n\nz: int = pkg1.broken.bad\n"
    gen.write_tree(proj, files)
    every_file = sorted(str(p.relative_to(proj)) for p in proj.rglob("*.py"))
    _cold(h, proj, every_file)
    for args in (["pkg3/uses_broken.py"], [gen.leaf_path(SPEC)], ["-p", "pkg1"]):
        h.check(h.dropin(proj, args, cache_dir=h.fresh_cache_dir()), warm=True)
    gen.write_tree(tmp_path / "other", files)  # imported first, named later
    h.check(h.dropin(tmp_path / "other", ["pkg3/uses_broken.py"]))
    h.check(h.dropin(tmp_path / "other", every_file, cache_dir=h.fresh_cache_dir()),
            warm=True)
