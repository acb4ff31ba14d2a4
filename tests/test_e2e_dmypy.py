"""dmypy warm from the store: real ``dmypy`` daemons, started and stopped by the tests.

A daemon started with ``MYPY_METASTORE=1`` (or ``enabled = true``) and
``--use-fine-grained-cache --cache-fine-grained`` loads its initial state from the store
instead of its ``--cache-dir``: a store filled by ``mypy-metastore --cache-fine-grained``
makes a daemon in a fresh checkout, with an empty cache directory, start warm.

The reference is dmypy itself from its own fine-grained cache (filled by stock mypy) on an
identical tree, step by step: its output is not always ``mypy --no-incremental``'s (a
daemon loaded from a fine-grained cache does not report the errors of modules it did not
re-check), so each step asserts equality with that daemon, and with the oracle wherever
the daemon's own output equals the oracle's.

Under ``use_fine_grained_cache`` mypy does not validate the metas it loads - dmypy compares
each file with the meta's mtime, size and hash itself - so the store must never offer a unit
whose source is not the file's: :func:`test_dmypy_is_never_served_a_stale_unit`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from helpers import gen
from helpers.run import Harness, by_file

pytestmark = pytest.mark.e2e

SPEC = gen.ProjectSpec()
TARGETS = [f"pkg{i}" for i in range(SPEC.packages)]
DAEMON_FLAGS = ["-v", "--use-fine-grained-cache", "--cache-fine-grained"]
_FRESH = re.compile(r"^LOG:  Metadata fresh for (\S+):", re.M)
_DEFERRED = re.compile(r"^LOG:  Deferring module to fine-grained update \S+ \((\S+)\)", re.M)


class Daemon:
    """One ``dmypy`` daemon (its own status and log files) run with ``python``."""

    def __init__(self, harness: Harness, root: Path, name: str, *, store: Path | None) -> None:
        self.harness = harness
        self.status = root / f"{name}.status.json"
        self.log = root / f"{name}.log"
        extra = {"MYPY_METASTORE": "1", "MYPY_METASTORE_STORE": str(store)} if store else \
            {"MYPY_METASTORE": "0"}
        self.env = harness._product_env(extra)
        self.logged = ""

    def _dmypy(self, cwd: Path, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.harness.product.python, "-m", "mypy.dmypy",
                               "--status-file", str(self.status), *args],
                              cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=300)

    def start(self, cwd: Path, cache_dir: Path) -> None:
        proc = self._dmypy(cwd, ["start", "--log-file", str(self.log), "--",
                                 *DAEMON_FLAGS, f"--cache-dir={cache_dir}"])
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def check(self, cwd: Path, targets: Sequence[str] = TARGETS) -> tuple[str, int]:
        """``dmypy check``: (stdout, exit status); the build's ``-v`` log (which the daemon
        sends back with the result) is kept in :attr:`logged`."""
        proc = self._dmypy(cwd, ["check", *targets])
        assert "Traceback" not in proc.stderr and "INTERNAL ERROR" not in proc.stdout, \
            proc.stdout + proc.stderr
        self.logged = proc.stderr
        return proc.stdout, proc.returncode

    def stop(self, cwd: Path) -> None:
        """``dmypy stop``; if the daemon is still alive after it, kill it by pid."""
        pid = None
        if self.status.exists():
            pid = int(json.loads(self.status.read_text())["pid"])
        self._dmypy(cwd, ["stop"])
        if pid is None:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def daemons(harness: Harness) -> Iterator[list[tuple[Daemon, Path]]]:
    """Daemons a test started (with their directory), stopped at its end whatever happens."""
    started: list[tuple[Daemon, Path]] = []
    yield started
    for daemon, cwd in started:
        daemon.stop(cwd)


def _fill_store(h: Harness, tree: Path) -> None:
    """``mypy-metastore --cache-fine-grained`` on ``tree``, exact."""
    run = h.dropin(tree, ["--cache-fine-grained"], verbose=False,
                   cache_dir=h.fresh_cache_dir())
    h.assert_exact(run, oracle_args=[])
    assert run.stats.published > 0


@pytest.mark.parametrize("checkout", ["same", "new"])
def test_dmypy_warm_from_the_store(harness: Harness, tmp_path: Path, checkout: str,
                                   daemons: list[tuple[Daemon, Path]]) -> None:
    """First check, an edit, a revert and a new file: the daemon on the store (in the
    checkout that filled it, or a fresh copy at another path, empty ``--cache-dir``) starts
    with every module fresh from the store and prints at every step what dmypy prints from
    its own fine-grained cache on the same tree."""
    h = harness
    a = gen.generate(SPEC)
    filled = tmp_path / "filled"
    gen.write_tree(filled, a)
    _fill_store(h, filled)
    proj = filled if checkout == "same" else tmp_path / "copy"
    ref = tmp_path / "reference"
    for tree in {proj, ref}:
        gen.write_tree(tree, a)
    ref_cache = tmp_path / "ref-cache"
    stock = h.stock(ref, ["--cache-fine-grained"], cache_dir=ref_cache, verbose=False)
    h.assert_exact(stock, oracle_args=[])

    ours, theirs = (Daemon(h, tmp_path, "store", store=h.store),
                    Daemon(h, tmp_path, "own", store=None))
    daemons += [(ours, proj), (theirs, ref)]
    cache_dir = h.fresh_cache_dir()
    ours.start(proj, cache_dir)
    theirs.start(ref, ref_cache)

    steps: list[tuple[str, Mapping[str, str]]] = [
        ("first check", a), ("edit", gen.edit_leaf(a, SPEC)), ("revert", a),
        ("new file", gen.version_b(a, SPEC))]
    agreed_with_oracle = []
    for step, files in steps:
        for tree in (proj, ref):
            gen.write_tree(tree, files)
        got, want = ours.check(proj), theirs.check(ref)
        assert got == want, f"{step}: store daemon {got!r} != own-cache daemon {want!r}"
        oracle = h.oracle(proj, [])
        if (oracle.stdout, oracle.returncode) == want:
            agreed_with_oracle.append(step)
        if step == "first check":  # every module from the store, nothing left to dmypy
            fresh = set(_FRESH.findall(ours.logged))
            assert {gen.module_name(p) for p in a if p.endswith(".py")} <= fresh, ours.logged
            assert "builtins" in fresh and not _DEFERRED.findall(ours.logged)
    # dmypy (2.4.1) reports only the errors of modules it re-checked since it loaded the
    # cache: the error of pkg1/broken.py shows only once version B re-checks that module.
    assert "new file" in agreed_with_oracle
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.db"))


def test_dmypy_is_never_served_a_stale_unit(harness: Harness, tmp_path: Path,
                                            daemons: list[tuple[Daemon, Path]]) -> None:
    """The store holds ``a.py`` as ``x: int = 1``; the file now says ``x: str = 1`` - same
    size, and even the mtime the store saw. dmypy trusts a meta whose mtime and size match
    the file, so a unit of the old source would hide both errors: the store offers none
    (mypy defers ``a`` to the fine-grained update) and the daemon prints the oracle's."""
    h = harness
    proj = tmp_path / "proj"
    old = {"a.py": "x: int = 1\n", "b.py": "from a import x\ny: int = x\n"}
    gen.write_tree(proj, old)
    run = h.dropin(proj, ["--cache-fine-grained", "a.py", "b.py"], verbose=False,
                   cache_dir=h.fresh_cache_dir())
    h.assert_exact(run, oracle_args=["a.py", "b.py"])
    stat = (proj / "a.py").stat()
    (proj / "a.py").write_text("x: str = 1\n")
    os.utime(proj / "a.py", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (proj / "a.py").stat().st_size == stat.st_size

    ours = Daemon(h, tmp_path, "store", store=h.store)
    daemons.append((ours, proj))
    ours.start(proj, h.fresh_cache_dir())
    got, status = ours.check(proj, ["a.py", "b.py"])
    oracle = h.oracle(proj, ["a.py", "b.py"])
    assert oracle.returncode == 1 and oracle.stdout.count("error:") == 2, oracle.stdout
    # dmypy reports the files its update re-checked in its own order
    assert (by_file(got), status) == (by_file(oracle.stdout), oracle.returncode), got
    logged = ours.logged
    assert "a" not in _FRESH.findall(logged) and "a" in _DEFERRED.findall(logged), logged
    assert "builtins" in _FRESH.findall(logged)  # the rest did come from the store
