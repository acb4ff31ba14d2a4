"""End-to-end: problems the drop-in cannot fix. Each gives ONE clear ``mypy-metastore:`` line
on stderr, then mypy runs without the store: stdout and exit status are the oracle's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import FORBIDDEN, MESSAGE_PREFIX, Harness, RunResult

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()
OLD_MYPY = "1.18.2"


def _one_line(run: RunResult) -> str:
    """The run's stderr must be exactly one line, a ``mypy-metastore:`` message."""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}\n{run.describe()}"
    assert lines[0].startswith(MESSAGE_PREFIX), run.describe()
    for bad in FORBIDDEN:
        assert bad not in run.stderr
    return lines[0]


@pytest.mark.parametrize("shape", ["directory", "inside-a-file"])
def test_unusable_store_path(harness: Harness, tmp_path: Path, shape: str) -> None:
    h = harness
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    if shape == "directory":
        store = tmp_path / "a-directory.db"
        store.mkdir()
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory\n")
        store = blocker / "store.db"
    for _ in range(2):  # also a second time: nothing was left half-created
        run = h.dropin(proj, store=store, stats=False, verbose=False)
        line = _one_line(run)
        assert str(store) in line or str(store.parent) in line, line
        h.assert_exact(run)
    if shape == "directory":
        assert list(store.iterdir()) == []
    else:
        assert blocker.read_text() == "not a directory\n"


def test_unsupported_mypy_version(harness: Harness, tmp_path: Path,
                                  old_mypy_python: Callable[[str], str]) -> None:
    h = harness
    python = old_mypy_python(OLD_MYPY)
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(SPEC))
    run = h.dropin(proj, python=python, stats=False, verbose=False)
    line = _one_line(run)
    assert OLD_MYPY in line and "mypy" in line, line
    h.assert_exact(run, oracle_python=python)
    assert not h.store.exists(), "the store was created although it cannot be used"
