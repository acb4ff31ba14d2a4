"""End-to-end: bad stores under the drop-in with real mypy (issue 5, item 3).

Each case damages or blocks the store in one way, then runs the drop-in without ``-v`` and
without the stats line, so that stderr holds only what the user would see: exactly ONE
``mypy-metastore:`` line naming the file, the problem and the fix (or nothing, when the store
recovers by itself), and stdout plus exit status equal to the ``--no-incremental`` oracle.
Where the store is skipped, the file is left byte-identical (it is the user's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import FORBIDDEN, MESSAGE_PREFIX, Harness, Pending, RunResult

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec(packages=3, modules_per_package=4)


def _lines(run: RunResult) -> list[str]:
    for bad in FORBIDDEN:
        assert bad not in run.stderr, f"{bad!r} on stderr\n{run.describe()}"
    return run.stderr.splitlines()


def one_line(run: RunResult, *needles: str) -> str:
    """The run's stderr is exactly one ``mypy-metastore:`` line containing ``needles``."""
    lines = _lines(run)
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}\n{run.describe()}"
    line = lines[0]
    assert line.startswith(MESSAGE_PREFIX), run.describe()
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def silent(run: RunResult) -> None:
    assert _lines(run) == [], run.describe()


def quiet_run(h: Harness, proj: Path, store: Path, **kw: object) -> RunResult:
    """A drop-in run as a user sees it (no -v, no stats), with a fresh --cache-dir."""
    return h.dropin(proj, store=store, stats=False, verbose=False,
                    cache_dir=h.fresh_cache_dir(), **kw)  # type: ignore[arg-type]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def admin(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([h.product.python, "-m", "metastore", *args], cwd=h.tmp,
                          env=h._product_env(None), capture_output=True, text=True, timeout=180)


@pytest.fixture()
def proj(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    gen.write_tree(p, gen.generate(SPEC))
    return p


def warm_store(h: Harness, proj: Path) -> Path:
    """A good, checkpointed store holding every unit of ``proj``."""
    h.check(h.dropin(proj))
    assert not Path(f"{h.store}-wal").exists() or os.path.getsize(f"{h.store}-wal") == 0
    return h.store


@pytest.mark.parametrize(("damage", "says"), [("truncated", "corrupt; delete it"),
                                              ("random-bytes", "not an SQLite database")])
def test_garbage_store_file(harness: Harness, proj: Path, damage: str, says: str) -> None:
    h = harness
    store = warm_store(h, proj)
    data = store.read_bytes()
    if damage == "truncated":
        store.write_bytes(data[: len(data) // 3])
    else:
        store.write_bytes(random.Random(5).randbytes(len(data)))
    before = sha(store)
    run = quiet_run(h, proj, store)
    one_line(run, str(store), says)
    h.assert_exact(run)
    assert sha(store) == before, "a damaged store file was modified"


def test_sqlite_file_of_another_application(harness: Harness, proj: Path,
                                            tmp_path: Path) -> None:
    h = harness
    store = tmp_path / "other-app.db"
    c = sqlite3.connect(store)
    c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    c.execute("INSERT INTO notes (text) VALUES ('precious')")
    c.commit()
    c.close()
    before = sha(store)
    run = quiet_run(h, proj, store)
    one_line(run, str(store), "another application", "choose another path")
    h.assert_exact(run)
    assert sha(store) == before


def test_store_of_a_newer_schema(harness: Harness, proj: Path) -> None:
    h = harness
    store = warm_store(h, proj)
    c = sqlite3.connect(store)
    c.execute("PRAGMA user_version = 99")
    c.commit()
    c.close()
    before = sha(store)
    run = quiet_run(h, proj, store)
    one_line(run, str(store), "newer mypy-metastore", "upgrade")
    h.assert_exact(run)
    assert sha(store) == before


@pytest.mark.parametrize("part", ["meta", "data", "ex"])
def test_blob_not_matching_its_digest(harness: Harness, proj: Path, part: str) -> None:
    """A blob whose content was changed behind the store's back (same length, other bytes):
    the units needing it are re-checked, one line says how to repair, verify --repair
    removes exactly those units, and the next run is warm and silent.

    A warm run served by the run snapshot needs the data blobs (checked on every run) but
    not the meta and meta_ex blobs (the snapshot holds the entries as served, under its own
    checksum): damage to those is silent and harmless there, and found by the first run
    that reads them - here one without the snapshot (its slots are deleted) - and by
    `metastore verify`."""
    h = harness
    store = warm_store(h, proj)
    index = {"meta": 0, "data": 1, "ex": 2}[part]
    c = sqlite3.connect(store)
    units = c.execute("SELECT refs FROM entries WHERE label != '' ORDER BY seq").fetchall()
    damaged = 0
    for (refs,) in units[:5]:
        d = refs[32 * index: 32 * index + 32]
        (blob,) = c.execute("SELECT data FROM blobs WHERE digest = ?", (d,)).fetchone()
        forged = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
        damaged += c.execute("UPDATE blobs SET data = ? WHERE digest = ?", (forged, d)).rowcount
    c.commit()
    assert damaged >= 1
    if part != "data":
        served = quiet_run(h, proj, store)
        silent(served)
        h.assert_exact(served)
        c.execute("DELETE FROM slots")
        c.commit()
    c.close()
    run = quiet_run(h, proj, store)
    one_line(run, str(store), "does not match their digest", "verify --repair")
    h.assert_exact(run)
    fixed = admin(h, "--store", str(store), "verify", "--repair")
    assert fixed.returncode == 0 and "removed" in fixed.stdout, fixed
    ok = admin(h, "--store", str(store), "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("ok top "), ok
    h.check(h.dropin(proj, cache_dir=h.fresh_cache_dir()))  # re-publishes what was removed
    h.check(h.dropin(proj, cache_dir=h.fresh_cache_dir()), warm=True)


def test_store_path_in_a_missing_directory_is_created(harness: Harness, proj: Path,
                                                      tmp_path: Path) -> None:
    """Created with its parents, as ccache creates its cache_dir; said in one line with
    --metastore-stats or -v (silent otherwise), and only by the run that created it."""
    h = harness
    store = tmp_path / "not" / "yet" / "there" / "store.db"
    run = quiet_run(h, proj, store)
    silent(run)
    h.assert_exact(run)
    assert store.exists()
    run = h.dropin(proj, store=store, cache_dir=h.fresh_cache_dir())
    h.check(run, warm=True)
    assert "created directory" not in run.stderr
    other = tmp_path / "other" / "dir" / "store.db"
    run = h.dropin(proj, store=other, cache_dir=h.fresh_cache_dir())
    h.check(run, warm=False)
    notes = [ln for ln in run.stderr.splitlines() if "created directory" in ln]
    assert notes == [f"mypy-metastore: created directory {other.parent} for the store {other}"]


@contextlib.contextmanager
def read_only_mount(path: Path) -> Iterator[None]:
    """``path`` as read-only media (a read-only bind mount: even root cannot write there);
    skips the test when mounts are not allowed (as root, permissions would not stop us)."""
    if subprocess.run(["mount", "--bind", str(path), str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needed for read-only media as root)")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr.strip()}")
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("existing", [False, True], ids=["no-file", "read-only-file"])
def test_store_on_read_only_media(harness: Harness, proj: Path, tmp_path: Path,
                                  existing: bool) -> None:
    h = harness
    media = tmp_path / "media"
    media.mkdir()
    store = media / "store.db"
    if existing:
        h.check(h.dropin(proj, store=store))
    names = sorted(p.name for p in media.iterdir())
    before = sha(store) if existing else ""
    with read_only_mount(media):
        run = quiet_run(h, proj, store)
        one_line(run, str(store), "cannot write", "choose another store path")
        h.assert_exact(run)
        assert sorted(p.name for p in media.iterdir()) == names
        if existing:
            assert sha(store) == before


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "1m") -> Iterator[str]:
    """A tiny tmpfs at ``path``; yields "tmpfs", or "" when mounting is not allowed (or
    ``METASTORE_TEST_NO_MOUNT=1`` asks for the fallback)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    if (os.environ.get("METASTORE_TEST_NO_MOUNT") == "1"
            or subprocess.run(mount, capture_output=True).returncode != 0):
        yield ""
        return
    try:
        yield "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(directory: Path) -> None:
    """Fill the file system holding ``directory`` to the last byte."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * chunk):
                    pass


_FSIZE_WRAPPER = (
    "import os, resource, signal, sys; "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "  # writes fail with EFBIG instead
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def test_store_on_a_full_filesystem(harness: Harness, proj: Path, tmp_path: Path) -> None:
    """The top holds version A; the disk is full when a run on version B must publish: the
    results are not saved, ONE line says so, mypy's output is exact; the store is intact
    (still warm for A) once there is room again."""
    h = harness
    a = gen.generate(SPEC)
    gen.write_tree(proj, a)
    disk = tmp_path / "disk"
    with small_filesystem(disk, "16m") as how:
        store = disk / "store.db"
        h.check(h.dropin(proj, store=store))
        gen.write_tree(proj, gen.version_b(a, SPEC))
        if how:
            _fill(disk)
            run = quiet_run(h, proj, store)
        else:
            # No mounts here: cap the file size of the run instead (RLIMIT_FSIZE).
            limit = 64 * 1024  # below what publishing version B writes to the -wal
            argv = h.dropin_argv([], store=store, stats=False, verbose=False,
                                 cache_dir=h.fresh_cache_dir())
            argv = [sys.executable, "-c", _FSIZE_WRAPPER, str(limit), *argv]
            run = Pending(argv, proj, h._product_env(None), [], "dropin",
                          h.product.python).wait()
        line = one_line(run, str(store))
        assert "disk full" in line or "size limit" in line or "I/O error" in line, line
        h.assert_exact(run)
        if how:
            (disk / "filler").unlink()
        ok = admin(h, "--store", str(store), "verify")
        assert ok.returncode == 0, ok
        gen.write_tree(proj, a)
        h.check(h.dropin(proj, store=store, cache_dir=h.fresh_cache_dir()), warm=True)


_CRASHED_WRITER = """
import os, sys
from metastore.store.api import digest
from metastore.store.local import Store
s = Store(sys.argv[1])
blob = b"left in the wal by a crashed writer"
s.put(entries=[("crash", b"crash-key", b"crash-value", [digest(blob)])], blobs=[blob])
os.kill(os.getpid(), 9)  # committed in the -wal, never checkpointed, never closed
"""


def test_wal_file_left_by_a_crashed_writer(harness: Harness, proj: Path) -> None:
    h = harness
    store = warm_store(h, proj)
    crashed = subprocess.run([h.product.python, "-c", _CRASHED_WRITER, str(store)],
                             env=h._product_env(None), capture_output=True, text=True)
    assert crashed.returncode == -signal.SIGKILL, crashed
    assert os.path.getsize(f"{store}-wal") > 0, "the writer left no -wal file"
    run = quiet_run(h, proj, store)
    silent(run)
    h.assert_exact(run)
    h.check(h.dropin(proj, cache_dir=h.fresh_cache_dir()), warm=True)
    c = sqlite3.connect(store)
    assert c.execute("SELECT count(*) FROM entries WHERE label = 'crash'").fetchone() == (1,)
    c.close()
    ok = admin(h, "--store", str(store), "verify")
    assert ok.returncode == 0, ok


@pytest.mark.parametrize("part", ["meta", "data"])
def test_base_with_blobs_not_matching_their_digests(harness: Harness, proj: Path,
                                                    tmp_path: Path, part: str) -> None:
    """A hostile or damaged base (issue 5, item 4): forged blobs are detected on read
    (verify_bases, default on), reported once, not used; the run is exact and the base
    untouched; `metastore verify` names it broken."""
    h = harness
    store = warm_store(h, proj)
    base = tmp_path / "artifact" / "base.db"
    base.parent.mkdir()
    out = admin(h, "--store", str(store), "export", str(base))
    assert out.returncode == 0, out
    index = {"meta": 0, "data": 1}[part]
    c = sqlite3.connect(base)
    units = c.execute("SELECT refs FROM entries ORDER BY seq").fetchall()
    for (refs,) in units[:: max(1, len(units) // 4)]:
        d = refs[32 * index: 32 * index + 32]
        (blob,) = c.execute("SELECT data FROM blobs WHERE digest = ?", (d,)).fetchone()
        c.execute("UPDATE blobs SET data = ? WHERE digest = ?", (bytes(blob)[::-1], d))
    c.commit()
    c.close()
    before = sha(base)
    top = tmp_path / "empty-top" / "top.db"
    run = quiet_run(h, proj, top, bases=[base])
    one_line(run, str(base), "damaged or forged", "remove it from bases")
    h.assert_exact(run)
    assert sha(base) == before
    broken = subprocess.run(
        [h.product.python, "-m", "metastore", "--store", str(top), "verify"], cwd=h.tmp,
        env=h._product_env({"MYPY_METASTORE_BASES": str(base)}), capture_output=True,
        text=True, timeout=180)
    assert broken.returncode == 1 and "BROKEN base" in broken.stdout, broken
    assert sha(base) == before
