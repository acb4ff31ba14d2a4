"""What a new user meets first: the README's Quick start run verbatim in a fresh venv,
``mypy-metastore --help`` naming our options, and ``metastore stats`` explaining its slot
kinds."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness, clean_env
from helpers.venvs import _NETWORK_ERRORS, copy_checkout

from metastore.config import CONFIG_KEYS, FLAGS
from metastore.mypy.slot_kinds import LEGEND

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    """The shell commands of the README's Quick start, in order (each ```sh block)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_quick_start_verbatim_in_a_fresh_venv(tmp_path: Path) -> None:
    """Steps 0 and 1 of the Quick start exactly as the README shows them, in a copy of the
    checkout with a new HOME: the first run exits 0, says it created the store and equals
    ``mypy --no-incremental``; the same command again says ``rechecked=0``."""
    venv_step, check_step, test_step = quick_start_commands()
    assert venv_step.startswith("python3 -m venv .venv")
    assert "mypy-metastore --metastore-stats" in check_step
    assert test_step.startswith("python3 -m pip install tox")
    clone = tmp_path / "clone"
    copy_checkout(ROOT, clone)
    env = clean_env(tmp_path)
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_USER", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(name, None)
    home = Path(env["HOME"])

    def sh(script: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["bash", "-ec", script], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=900)
        if proc.returncode != 0 and _NETWORK_ERRORS.search(proc.stderr):
            if os.environ.get("CI"):
                pytest.fail(f"pip could not reach the package index: {proc.stderr[-800:]}")
            pytest.skip("pip could not reach the package index")
        return proc

    first = sh(f"{venv_step}\n{check_step}")
    assert first.returncode == 0, first.stdout + first.stderr
    store = home / ".cache" / "mypy-metastore" / "store.db"
    assert f"mypy-metastore: created directory {store.parent} for the store {store}" \
        in first.stderr, first.stderr
    assert "rechecked=0 " not in first.stderr
    again = sh(f". .venv/bin/activate\n{check_step}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"^mypy-metastore: offered=\d+ missed=0 rechecked=0 ", again.stderr, re.M), \
        again.stderr
    assert "created directory" not in again.stderr
    oracle = subprocess.run(
        [str(clone / ".venv" / "bin" / "mypy"), "--no-incremental", "--cache-dir=/dev/null",
         *check_step.split("--metastore-stats", 1)[1].split()],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    # pip's output comes first on stdout, then mypy's report
    assert oracle.returncode == 0 and oracle.stdout.startswith("Success: "), oracle.stdout
    assert first.stdout.endswith("\n" + oracle.stdout) and again.stdout.endswith(oracle.stdout)
    assert not (clone / ".mypy_cache").exists()


def _run(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([harness.product.python, "-m", *args], cwd=harness.tmp,
                          env=harness._product_env(None), capture_output=True, text=True,
                          timeout=120)


def test_help_lists_every_option_after_mypys(harness: Harness) -> None:
    """``mypy-metastore --help``: mypy's help, then every ``--metastore-*`` flag and every
    setting with its environment variable and config key; ``--metastore-help``: ours only."""
    mypy_help = _run(harness, "mypy", "--help")
    full = _run(harness, "metastore.seams.dropin", "--help")
    ours = _run(harness, "metastore.seams.dropin", "--metastore-help")
    assert full.returncode == ours.returncode == mypy_help.returncode == 0, full.stderr
    assert full.stdout.startswith(mypy_help.stdout)
    assert full.stdout.endswith(ours.stdout)
    assert not ours.stdout.startswith("usage: mypy")
    for flag in [*FLAGS, "--metastore-help"]:
        assert re.search(rf"^  {flag}\b", ours.stdout, re.M), flag
    text = " ".join(ours.stdout.split())
    for key in CONFIG_KEYS:
        assert f"config key {key}" in text, key
    env_names = set(re.findall(r"env (MYPY_METASTORE\w*)=", text))
    assert len(env_names) == len(CONFIG_KEYS)
    assert not (harness.tmp / "home" / ".cache" / "mypy-metastore").exists()  # opens nothing


def test_stats_explains_every_slot_kind_it_shows(harness: Harness, tmp_path: Path) -> None:
    """Every slot kind a real run writes is named in ``metastore stats`` with one line of
    legend, and ``metastore stats --help`` explains every kind there is."""
    proj = tmp_path / "proj"
    gen.write_tree(proj, gen.generate(gen.ProjectSpec()))
    for _ in range(2):
        harness.assert_exact(harness.dropin(proj, ["."], verbose=False), oracle_args=["."])
    stats = _run(harness, "metastore", "--store", str(harness.store), "stats")
    assert stats.returncode == 0, stats.stderr
    (slots,) = [line for line in stats.stdout.splitlines() if line.startswith("  slots ")]
    shown = re.findall(r"([a-z-]+)=\d", slots)
    assert {"run-snapshot", "source-memo"} <= set(shown), slots
    legend = stats.stdout.split("\nslot kinds:\n", 1)[1]
    for kind in shown:
        assert re.search(rf"^  {kind} +\S", legend, re.M), kind
    usage = _run(harness, "metastore", "stats", "--help")
    for kind in LEGEND:
        assert re.search(rf"^  {kind} +\S", usage.stdout, re.M), kind
