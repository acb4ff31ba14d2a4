"""End-to-end: sharing stores (export, read-only/immutable bases, copy_hits, merge) and
eviction (gc under concurrent runs, the size cap), with real mypy processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness, RunResult, snapshot_lines

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()


def admin(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m metastore ARGS`` with the product's interpreter and the test's env."""
    return subprocess.run([h.product.python, "-m", "metastore", *args], cwd=h.tmp,
                          env=h._product_env(None), capture_output=True, text=True, timeout=180)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[str]:
    """Make ``path`` read-only: a read-only bind mount when allowed (real read-only media,
    which even root cannot write), else permissions. Yields which one."""
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)],
                             capture_output=True).returncode == 0
    if not mounted:
        path.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        yield "read-only mount" if mounted else "read-only permissions"
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)
        path.chmod(stat.S_IRWXU)


def entry_count(path: Path) -> int:
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(c.execute("SELECT count(*) FROM entries").fetchone()[0])
    finally:
        c.close()


def test_exported_immutable_base_on_read_only_media(harness: Harness, tmp_path: Path) -> None:
    """P6's shape: a base exported from another checkout path, on read-only media, opened
    immutable, under an empty top in a fresh checkout: fully warm, exact, the base untouched;
    with copy_hits the top then stands alone."""
    h = harness
    files = gen.generate(SPEC)
    main = tmp_path / "main-checkout"
    gen.write_tree(main, files)
    h.check(h.dropin(main))
    media = tmp_path / "media"
    media.mkdir()
    base = media / "base.db"
    out = admin(h, "--store", str(h.store), "export", str(base))
    assert out.returncode == 0 and out.stderr == "" and "exported" in out.stdout, out
    # Exported twice from the same entries: the same bytes.
    assert admin(h, "--store", str(h.store), "export", str(tmp_path / "again.db")).returncode == 0
    assert _sha256(tmp_path / "again.db") == _sha256(base)
    before = _sha256(base)

    pr = tmp_path / "pr-checkout"
    gen.copy_tree(main, pr)
    log = tmp_path / "debug.log"
    with read_only_dir(media) as how:
        top = tmp_path / "pr-top" / "top.db"
        run = h.dropin(pr, store=top, bases=[Path(f"{base}?immutable=1")],
                       cache_dir=h.fresh_cache_dir(), env={"MYPY_METASTORE_DEBUG_LOG": str(log)})
        _, s = h.check(run, warm=True)
        assert s.layer_hits == (0, s.offered), f"hits not all from the base ({how}): {s}"
        # Every unit came from the main checkout's run snapshot (exported with the base),
        # its project files proven by content here.
        kind, records, compared, offered = snapshot_lines(log)[-1]
        assert kind == "portable" and records == offered == s.offered, snapshot_lines(log)
        assert compared > 40, snapshot_lines(log)
        assert sorted(p.name for p in media.iterdir()) == ["base.db"], how
        assert _sha256(base) == before, how

        # copy_hits: the hits are written back into the top, which then needs no base.
        top2 = tmp_path / "pr-top2" / "top.db"
        _, s2 = h.check(h.dropin(pr, store=top2, bases=[Path(f"{base}?immutable=1")],
                                 cache_dir=h.fresh_cache_dir(),
                                 env={"MYPY_METASTORE_COPY_HITS": "1"}), warm=True)
        assert entry_count(top2) == s2.offered
    _, s3 = h.check(h.dropin(pr, store=top2, cache_dir=h.fresh_cache_dir()), warm=True)
    assert s3.layer_hits == (s3.offered,)
    assert _sha256(base) == before


def test_missing_blobs_degrade_to_a_miss(harness: Harness, tmp_path: Path) -> None:
    """Blobs gone from under their entries (as after gc --grace 0 or damage): those modules
    are re-checked, never a crash or a wrong result; verify --repair then cleans up."""
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    h.check(h.dropin(proj))
    c = sqlite3.connect(h.store)
    rows = c.execute("SELECT refs FROM entries ORDER BY seq LIMIT 3").fetchall()
    # Delete the data blob (second ref) of three units.
    for (refs,) in rows:
        c.execute("DELETE FROM blobs WHERE digest = ?", (refs[32:64],))
    c.commit()
    c.close()
    broken = admin(h, "--store", str(h.store), "verify")
    assert broken.returncode == 1 and broken.stdout.startswith("BROKEN top "), broken
    assert "3 entries need missing or damaged blobs" in broken.stdout, broken
    v, s = h.check(h.dropin(proj, cache_dir=h.fresh_cache_dir()))
    assert v.rechecked >= 3 and s.missed >= 3, (v, s)
    fixed = admin(h, "--store", str(h.store), "verify", "--repair")
    assert fixed.returncode == 0, fixed
    ok = admin(h, "--store", str(h.store), "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("ok top "), ok
    h.check(h.dropin(proj, cache_dir=h.fresh_cache_dir()), warm=True)


def test_gc_during_concurrent_runs_keeps_every_run_exact(harness: Harness,
                                                         tmp_path: Path) -> None:
    h = harness
    a = gen.generate(SPEC)
    dirs = {"A": tmp_path / "A", "B": tmp_path / "B"}
    gen.write_tree(dirs["A"], a)
    gen.write_tree(dirs["B"], gen.version_b(a, SPEC))
    for d in dirs.values():
        h.check(h.dropin(d))
    pending = [h.start_dropin(dirs[n], cache_dir=h.fresh_cache_dir()) for n in "ABA"]
    gcs = 0
    while any(p.proc.poll() is None for p in pending) or gcs == 0:
        out = admin(h, "--store", str(h.store), "gc", "--max-size", "0")
        assert out.returncode == 0 and "evicted" in out.stdout, out
        gcs += 1
    results: list[RunResult] = [p.wait() for p in pending]
    for run in results:
        h.check(run)
    assert admin(h, "--store", str(h.store), "verify").returncode == 0
    for d in dirs.values():
        h.check(h.dropin(d, cache_dir=h.fresh_cache_dir()))


def test_merge_while_a_run_writes_loses_nothing(harness: Harness, tmp_path: Path) -> None:
    h = harness
    a = gen.generate(SPEC)
    dirs = {"A": tmp_path / "A", "B": tmp_path / "B"}
    gen.write_tree(dirs["A"], a)
    gen.write_tree(dirs["B"], gen.version_b(a, SPEC))
    other = tmp_path / "other" / "store.db"
    h.check(h.dropin(dirs["A"], store=other))
    writer = h.start_dropin(dirs["B"])  # writes into h.store while we merge into it
    merged = admin(h, "merge", str(other), "--into", str(h.store))
    assert merged.returncode == 0 and "merged 1 store(s)" in merged.stdout, merged
    h.check(writer.wait())
    assert entry_count(h.store) >= entry_count(other)
    for d in dirs.values():
        h.check(h.dropin(d, cache_dir=h.fresh_cache_dir()), warm=True)


def test_size_cap_holds_after_many_runs(harness: Harness, tmp_path: Path) -> None:
    h = harness
    files = gen.generate(SPEC)
    proj = tmp_path / "proj"
    gen.write_tree(proj, files)
    cap = 800 * 1024  # an empty store is some 200 KiB of 16 KiB pages; a run writes ~1 MiB
    env = {"MYPY_METASTORE_MAX_SIZE": str(cap)}
    lives = []
    for edit in range(6):
        tree = gen.edit_core(files, edit) if edit else files
        gen.write_tree(proj, tree)
        h.check(h.dropin(proj, env=env))
        out = admin(h, "--store", str(h.store), "stats", "--json")
        top = json.loads(out.stdout)["layers"][0]
        lives.append(top["live_bytes"])
        assert top["live_bytes"] <= cap, (edit, lives)
    assert top["counters"].get("evicted_entries", 0) > 0, top
    # Still exact and usable after trimming.
    h.check(h.dropin(proj, env=env))
    assert os.path.getsize(h.store) > 0
