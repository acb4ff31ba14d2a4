"""End-to-end: data blobs checked ahead of the build by the drop-in's helper process (see
metastore.mypy.checked_ahead). A warm run takes the helper's answer for every data blob of
its snapshot (also after an edit: a delta; also in another checkout); a blob damaged
behind the store's back is left out of the answer and found by the build as before (one
line, the unit re-checked); without the helper the build checks every blob itself. Real
mypy, real SQLite, real processes; every run compared with ``mypy --no-incremental``.
What the build did is read from the developers' log (``MYPY_METASTORE_DEBUG_LOG``)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness, RunResult
from test_e2e_badstores import one_line
from test_e2e_delta import _write

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec(packages=3, modules_per_package=4)
_CHECKED = re.compile(r"data blobs: (\d+) to check, (\d+) found intact ahead")


def run(h: Harness, proj: Path, log: Path, *, quiet: bool = False, **env: str
        ) -> tuple[RunResult, list[tuple[int, int]]]:
    """A drop-in run (with the same argv every time it is ``quiet`` or not, so the same
    hint) and the (to check, found intact ahead) pairs it logged."""
    log.unlink(missing_ok=True)
    # The build waits for the helper's answer however long it takes: on a busy test
    # machine the helper may lose the race it normally wins, and the build then checks
    # the blobs itself (same results, nothing to assert).
    env = {"MYPY_METASTORE_DEBUG_LOG": str(log), "MYPY_METASTORE_CHECK_AHEAD": "wait", **env}
    result = h.dropin(proj, stats=not quiet, verbose=not quiet, env=env)
    text = log.read_text() if log.exists() else ""
    return result, [(int(a), int(b)) for a, b in _CHECKED.findall(text)]


def test_warm_runs_take_the_helpers_answer(harness: Harness, tmp_path: Path) -> None:
    h, proj, log = harness, tmp_path / "proj", tmp_path / "debug.log"
    files = gen.generate(SPEC)
    _write(proj, files)
    h.check(run(h, proj, log)[0])

    warm, checked = run(h, proj, log)
    h.check(warm, warm=True)
    assert checked and all(n > 0 and ahead == n for n, ahead in checked), checked

    # Without the helper: the same output, every blob checked by the build.
    alone, checked = run(h, proj, log, MYPY_METASTORE_CHECK_AHEAD="0")
    h.check(alone, warm=True)
    assert checked and all(n > 0 and ahead == 0 for n, ahead in checked), checked

    # After an edit the checkout's slot holds a delta: the helper follows it.
    edited = gen.edit_leaf(files, SPEC, 1)
    _write(proj, edited)
    h.check(run(h, proj, log)[0])
    warm, checked = run(h, proj, log)
    h.check(warm, warm=True)
    assert checked and all(n > 0 and ahead == n for n, ahead in checked), checked

    # Another checkout of the tree (a worktree, a Pants sandbox: another directory, the
    # same argv) takes the last snapshot through the portable slot: the helper, finding
    # no snapshot named for that directory, checks the most recent one - the same.
    other = tmp_path / "other" / "proj"
    _write(other, edited)
    first, checked = run(h, other, log)
    h.check(first, warm=True)
    assert checked and all(n > 0 and ahead == n for n, ahead in checked), checked
    back, checked = run(h, proj, log)  # and the first checkout still has its own
    h.check(back, warm=True)
    assert checked and all(n > 0 and ahead == n for n, ahead in checked), checked


def test_a_damaged_data_blob_is_left_to_the_build(harness: Harness, tmp_path: Path) -> None:
    h, proj, log = harness, tmp_path / "proj", tmp_path / "debug.log"
    _write(proj, gen.generate(SPEC))
    h.assert_exact(run(h, proj, log, quiet=True)[0])
    h.assert_exact(run(h, proj, log, quiet=True)[0])
    c = sqlite3.connect(h.store)
    damaged = 0
    for (refs,) in c.execute("SELECT refs FROM entries WHERE label != '' ORDER BY seq "
                             "LIMIT 3").fetchall():
        d = refs[32:64]  # the data blob
        (blob,) = c.execute("SELECT data FROM blobs WHERE digest = ?", (d,)).fetchone()
        forged = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
        damaged += c.execute("UPDATE blobs SET data = ? WHERE digest = ?", (forged, d)).rowcount
    c.commit()
    c.close()
    assert damaged >= 1

    result, checked = run(h, proj, log, quiet=True)
    one_line(result, str(h.store), "does not match their digest", "verify --repair")
    h.assert_exact(result)
    (n, ahead), *_ = checked
    assert n - ahead == damaged, checked  # exactly the damaged ones were left to the build
