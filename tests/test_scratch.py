"""Tests of metastore.store.scratch: real files, real processes."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for spawned processes too

from metastore.store.scratch import ScratchPad, prune_scratch_dir, remove_scratch  # noqa: E402
from metastore.store.api import StoreError  # noqa: E402


def test_put_get_commit_visibility(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "pad.db")
    a, b = ScratchPad(path), ScratchPad(path)
    assert a.get("x") is None
    a.put("x", b"1")
    assert a.get("x") == b"1"  # own pending write
    assert b.get("x") is None  # not committed yet
    a.commit()
    assert b.get("x") == b"1"
    b.put("x", b"2")
    b.commit()
    assert a.get("x") == b"2"
    a.put("y", b"lost")
    a.close()
    a.close()
    assert b.get("y") is None  # uncommitted puts are discarded by close()
    with pytest.raises(ValueError):
        a.get("x")
    b.close()


def _worker(path: str, worker: int, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    pad = ScratchPad(path)  # all create the new file at once
    for i in range(20):
        pad.put(f"w{worker}-{i}", b"%d" % (worker * 100 + i))
        if i % 5 == 4:
            pad.commit()
    pad.put("shared", b"x")
    pad.commit()
    pad.close()


def test_processes_share_one_pad(tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "pad.db")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_worker, args=(path, w, barrier)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    pad = ScratchPad(path)
    assert all(pad.get(f"w{w}-{i}") == b"%d" % (w * 100 + i) for w in range(3) for i in range(20))
    assert pad.get("shared") == b"x"
    pad.close()
    remove_scratch(path)
    assert os.listdir(tmp_path / "new") == []


def test_directory_path_is_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        ScratchPad(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path}: ") and "\n" not in str(info.value)


def test_remove_scratch_missing_is_fine(tmp_path: Path) -> None:
    remove_scratch(str(tmp_path / "nothing.db"))


def test_prune_scratch_dir(tmp_path: Path) -> None:
    old = time.time() - 3600
    for name in ["dead.db", "dead.db-wal", "dead.db-shm", "other-old"]:
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (old, old))
    # a live pad whose main file is old but whose WAL was just written: kept whole
    for name in ["live.db", "live.db-wal"]:
        (tmp_path / name).write_bytes(b"")
    os.utime(tmp_path / "live.db", (old, old))
    (tmp_path / "subdir").mkdir()
    os.utime(tmp_path / "subdir", (old, old))
    assert prune_scratch_dir(str(tmp_path), 60) == 4
    assert sorted(os.listdir(tmp_path)) == ["live.db", "live.db-wal", "subdir"]
    assert prune_scratch_dir(str(tmp_path), 60) == 0
    assert prune_scratch_dir(str(tmp_path / "missing"), 60) == 0


def test_leftover_pads_are_pruned_at_most_once_per_interval(tmp_path: Path) -> None:
    """Session start-up prunes pads of killed builds, but lists the directory only when the
    last pruning is PRUNE_INTERVAL_S old (a stamp file's mtime), so a run usually pays a stat."""
    from metastore.seams import session

    old = time.time() - session.STALE_PAD_S - 60

    def leave_pad(name: str) -> None:
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (old, old))

    leave_pad("killed1.db")
    session._prune_now_and_then(str(tmp_path))
    assert not (tmp_path / "killed1.db").exists()
    leave_pad("killed2.db")
    session._prune_now_and_then(str(tmp_path))
    assert (tmp_path / "killed2.db").exists()  # pruned a moment ago: not again yet
    stamp = tmp_path / session.PRUNE_STAMP
    then = time.time() - session.PRUNE_INTERVAL_S - 1
    os.utime(stamp, (then, then))
    session._prune_now_and_then(str(tmp_path))
    assert not (tmp_path / "killed2.db").exists()
    session._prune_now_and_then(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
