"""The pre-commit hook (``.pre-commit-hooks.yaml``) with real ``pre-commit`` from PyPI: in a
temporary git repository with two worktrees, a commit in the second worktree is checked
warm from the store the first one filled, and prints what ``mypy --no-incremental`` prints.

pre-commit installs the hook as a user's configuration would: it clones this checkout (as a
git repository of its own, committed) at a revision and pip-installs it into the hook's
environment (from the package index: mypy, apsw, blake3).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness, clean_env
from helpers.venvs import _NETWORK_ERRORS, copy_checkout

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SPEC = gen.ProjectSpec()
HOOK_ARGS = ["--ignore-missing-imports"]  # the hook's default args
_STATS = re.compile(r"^mypy-metastore: offered=(\d+) missed=(\d+) rechecked=(\d+) ", re.M)


def _pre_commit() -> str:
    found = shutil.which("pre-commit", path=os.path.dirname(sys.executable)) or \
        shutil.which("pre-commit")
    assert found, "pre-commit is a test dependency (pip install -e '.[test]')"
    return found


def _git(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_precommit_commit_in_a_second_worktree_is_warm(harness: Harness,
                                                       tmp_path: Path) -> None:
    env = clean_env(tmp_path, extra={
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "MYPY_METASTORE_STATS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"})
    env["PATH"] = os.path.dirname(_pre_commit()) + os.pathsep + env.get("PATH", "")
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_USER"):
        env.pop(name, None)

    hooks = copy_checkout(ROOT, tmp_path / "hooks-repo")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "hooks"]):
        assert _git(hooks, *args, env=env).returncode == 0
    rev = _git(hooks, "rev-parse", "HEAD", env=env).stdout.strip()

    wt1, wt2 = tmp_path / "wt1", tmp_path / "wt2"
    files = gen.generate(SPEC)
    files[gen.BROKEN] = files[gen.BROKEN].replace("bad: str", "bad: float")  # passes
    gen.write_tree(wt1, files)
    (wt1 / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {hooks}\n  rev: {rev}\n  hooks:\n  - id: mypy-metastore\n"
        "    verbose: true\n")
    assert _git(wt1, "init", "-q", env=env).returncode == 0
    install = subprocess.run([_pre_commit(), "install"], cwd=wt1, env=env, capture_output=True,
                             text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr

    def commit(tree: Path) -> subprocess.CompletedProcess[str]:
        assert _git(tree, "add", "-A", env=env).returncode == 0
        done = _git(tree, "commit", "-m", "change", env=env)
        out = done.stdout + done.stderr
        if done.returncode != 0 and _NETWORK_ERRORS.search(out) and not os.environ.get("CI"):
            pytest.skip("pip could not reach the package index for the hook's environment")
        assert "mypy (mypy-metastore)" in out, out
        return done

    first = commit(wt1)  # installs the hook's environment, then checks every file: cold
    assert first.returncode == 0, first.stdout + first.stderr
    cold = _STATS.search(first.stdout + first.stderr)
    assert cold is not None and int(cold.group(3)) > 40, first.stdout + first.stderr

    assert _git(wt1, "worktree", "add", "-q", str(wt2), env=env).returncode == 0
    gen.write_tree(wt2, gen.edit_leaf(files, SPEC))  # adds a type error to the leaf module
    second = commit(wt2)
    out = second.stdout + second.stderr
    oracle = harness.oracle(wt2, [*HOOK_ARGS, gen.leaf_path(SPEC)])
    assert oracle.returncode == 1 and "error:" in oracle.stdout, oracle.stdout
    assert second.returncode != 0 and "- exit code: 1" in out, out  # the hook failed the commit
    # the hook's output: mypy's stdout and stderr in one pipe (the stats line may come
    # before mypy's summary line)
    report = "".join(line for line in out.splitlines(keepends=True)
                     if not line.startswith("mypy-metastore: "))
    assert oracle.stdout in report, out
    warm = _STATS.search(out)
    assert warm is not None, out
    offered, missed, rechecked = (int(g) for g in warm.groups())
    assert (missed, rechecked) == (1, 1) and offered > 40, out  # only the edited module
    assert not (wt2 / ".mypy_cache").exists()
