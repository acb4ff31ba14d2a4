"""Differential fuzzing: mypy through the store prints exactly what ``mypy --no-incremental``
prints, with the same exit status, after every step of random edit sequences on random
multi-package projects (see :mod:`helpers.fuzzgen` for what the projects exercise).

One store is shared by every example of a session (and all three cache modes: fixed
format, JSON, ``-n 2``), and every example works in the same directory with the same
``--cache-dir`` (per mode) - so a unit stored by one example is offered to the others
whenever its content key matches, which is where a wrong hit would show up. Steps
``swap`` (check out a saved state, like a branch switch) and ``copy`` (the tree copied to
another path with fresh mtimes and an empty ``--cache-dir``) act on the tree.

Each step runs the drop-in and the oracle (``--no-incremental --cache-dir=/dev/null``,
memoised on the tree's content) in parallel.

Profiles (environment ``METASTORE_FUZZ_PROFILE``):

- ``ci`` (default): a few derandomized examples per mode, well under 3 minutes on 2 cores;
- ``long`` (``tox -e fuzz``): thousands of steps, random; ``METASTORE_FUZZ_SECONDS``
  bounds the wall time (examples after the deadline return at once), and
  ``METASTORE_FUZZ_LOG`` names a file that receives one line per step and every mismatch.
"""

from __future__ import annotations

import difflib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import fuzzgen, gen
from helpers.fuzzgen import Edit, Project
from helpers.run import Harness, Product, RunResult, by_file
from helpers.venvs import mypy_version
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

PROFILE = os.environ.get("METASTORE_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"METASTORE_FUZZ_PROFILE={PROFILE!r}: expected 'ci' or 'long'")
LONG = PROFILE == "long"
SECONDS = float(os.environ.get("METASTORE_FUZZ_SECONDS", "0") or 0)
LOG = os.environ.get("METASTORE_FUZZ_LOG")

MODES: dict[str, list[str]] = {
    "ff": [],
    "json": ["--no-fixed-format-cache"],
    "n2": ["-n", "2"],
}
# Share of METASTORE_FUZZ_SECONDS per mode (the three tests run one after the other).
SHARE = {"ff": 0.5, "json": 0.25, "n2": 0.25}
# (examples, max edits per example) per mode in the ci profile.
CI_BUDGET = {"ff": (20, 8), "json": (8, 6), "n2": (8, 6)}


def _settings(mode: str) -> settings:
    examples, steps = CI_BUDGET[mode]
    return settings(
        max_examples=5000 if LONG else examples,
        deadline=None,
        derandomize=not LONG,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


def _steps(mode: str) -> st.SearchStrategy[list[Edit]]:
    return st.lists(fuzzgen.edits(), min_size=1, max_size=12 if LONG else CI_BUDGET[mode][1])


def _oracle_args(mode: str) -> list[str]:
    if mode == "n2":  # the oracle runs without workers (mypy requires a cache for them)
        # Before 2.4, -n turns the native parser on; the oracle must parse the same way.
        return [] if mypy_version() >= (2, 4) else ["--native-parser"]
    return MODES[mode]


@dataclass
class Session:
    """State shared by every example of the test session."""

    harness: Harness
    root: Path
    start: float = field(default_factory=time.monotonic)
    examples: int = 0
    steps: int = 0
    copies: int = 0
    artefacts: int = 0
    mismatches: list[str] = field(default_factory=list)

    mode_start: dict[str, float] = field(default_factory=dict)

    def out_of_time(self, mode: str) -> bool:
        """True once ``mode`` used its share of ``METASTORE_FUZZ_SECONDS``."""
        if SECONDS <= 0:
            return False
        start = self.mode_start.setdefault(mode, time.monotonic())
        return time.monotonic() - start > SECONDS * SHARE[mode]

    def log(self, line: str) -> None:
        if LOG:
            with open(LOG, "a", encoding="utf-8") as f:
                f.write(line.rstrip("\n") + "\n")


SESSION: Session | None = None


@pytest.fixture(scope="session")
def fuzz(installed_product: Product, tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One harness and one store for every example of the session."""
    global SESSION
    if SESSION is None:
        root = tmp_path_factory.mktemp("fuzz")
        SESSION = Session(Harness(root, installed_product, installed_product.python), root)
    return SESSION


def summary() -> str | None:
    """The session's figures (printed by conftest's terminal summary)."""
    s = SESSION
    if s is None:
        return None
    seconds = time.monotonic() - s.start
    return (f"fuzz ({PROFILE}): {s.examples} examples, {s.steps} steps, "
            f"{len(s.mismatches)} mismatches, {s.artefacts} steps differing only as stock "
            f"incremental mypy does (file order, only-once notes, the lines of one source "
            f"line) in {seconds:.0f}s; "
            f"store {s.harness.store}")


def _write(proj: Path, p: Project) -> None:
    gen.write_tree(proj, fuzzgen.render(p))
    for d in sorted((d for d in proj.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
        if not any(d.iterdir()):
            d.rmdir()


def _check(s: Session, proj: Path, cache: Path, mode: str, p: Project,
           history: Sequence[str]) -> None:
    h = s.harness
    pending = h.start_dropin(proj, MODES[mode], verbose=False, cache_dir=cache)
    oracle = h.oracle(proj, _oracle_args(mode))
    _judge(s, pending.wait(), oracle, mode, history[-1], p, proj, history)


def _judge(s: Session, run: RunResult, oracle: RunResult, mode: str, step: str, p: Project,
           tree: Path, history: Sequence[str]) -> None:
    """Log the step; count one whose output differs from the oracle only as stock incremental
    mypy's does; fail on any other difference (recorded with what led to it)."""
    s.steps += 1
    s.log(f"step {s.steps} example {s.examples} mode={mode} {step} exit={run.returncode}"
          f" oracle={oracle.returncode} lines={len(run.stdout.splitlines())}")
    what = f"mode {mode}" if step == history[-1] else f"mode {mode}, {step}"
    problem = _compare(s.harness, run, oracle)
    if problem is None:
        return
    kind, diff = problem
    report = (f"{kind.upper()} ({what}) after {list(history)}\n{diff}\n"
              f"project:\n{fuzzgen.describe(p)}\ntree: {tree}\n{run.describe()}")
    s.log(report)
    if kind == "artefact":
        s.artefacts += 1
        return
    s.mismatches.append(report)
    raise AssertionError(report)


def _check_race(s: Session, mode: str, versions: Sequence[Project],
                history: Sequence[str]) -> None:
    """Check ``versions`` at once, each in a new copy with an empty ``--cache-dir``: processes
    building different versions concurrently on the one store; each output must be its
    oracle's."""
    h = s.harness
    started = []
    for p in versions:
        s.copies += 1
        dest = s.root / "copies" / f"c{s.copies}"
        _write(dest, p)
        started.append((dest, p, h.start_dropin(dest, MODES[mode], verbose=False,
                                                cache_dir=s.root / "cache" / f"copy{s.copies}")))
    for dest, p, pending in started:
        oracle = h.oracle(dest, _oracle_args(mode))
        _judge(s, pending.wait(), oracle, mode, "race", p, dest, history)
        shutil.rmtree(dest)


def _compare(h: Harness, run: RunResult, oracle: RunResult) -> tuple[str, str] | None:
    """None if ``run`` printed exactly what the oracle printed with the same exit status;
    ``("artefact", diff)`` if the two differ only as stock incremental mypy's output differs
    from ``--no-incremental`` (the order in which files are reported, only-once notes);
    ``("mismatch", why)`` otherwise."""
    for bad in ("Traceback (most recent call last)", "INTERNAL ERROR"):
        if bad in run.stderr:
            return "mismatch", f"{bad!r} on stderr"
    try:
        h.assert_clean(run)
    except AssertionError as e:
        return "mismatch", str(e)
    got, want = h.normalise(run.stdout), h.normalise(oracle.stdout)
    if got == want and run.returncode == oracle.returncode:
        return None
    diff = "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), "oracle",
                                          "store", lineterm=""))
    diff = f"exit {run.returncode} vs oracle {oracle.returncode}\n{diff}"
    if run.returncode == oracle.returncode and by_file(got) == by_file(want):
        return "artefact", diff
    return "mismatch", diff


def run_scenario(s: Session, mode: str, project: Project, edits: Sequence[Edit]) -> None:
    """Write ``project`` to the shared work directory, check, then apply each edit and
    check after each."""
    if s.out_of_time(mode):
        return
    s.examples += 1
    proj = s.root / "work"
    cache = s.root / "cache" / mode
    current = project
    saved = [project]
    history = [f"start({len(project.mods)} modules)"]
    s.log(f"example {s.examples} mode={mode} project={project!r} edits={list(edits)!r}")
    _write(proj, current)
    _check(s, proj, cache, mode, current, history)
    for e in edits:
        history.append(repr(e))
        if e.kind == "save":
            saved.append(current)
            continue
        if e.kind == "race":
            _check_race(s, mode, [current, saved[e.a % len(saved)]], history)
            continue
        if e.kind == "settle":
            time.sleep(2.2)  # > metastore.mypy.source_files.RACY_SECONDS
        elif e.kind == "swap":
            current = saved[e.a % len(saved)]
        elif e.kind == "copy":
            s.copies += 1
            dest = s.root / "copies" / f"c{s.copies}"
            gen.copy_tree(proj, dest)
            proj = dest
            cache = s.root / "cache" / f"copy{s.copies}"
        else:
            current = fuzzgen.apply_edit(current, e)
        _write(proj, current)
        _check(s, proj, cache, mode, current, history)
    if proj != s.root / "work":
        shutil.rmtree(proj)


@settings(_settings("ff"))
@given(project=fuzzgen.projects(), edits=_steps("ff"))
def test_fixed_format(fuzz: Session, project: Project, edits: list[Edit]) -> None:
    run_scenario(fuzz, "ff", project, edits)


@settings(_settings("json"))
@given(project=fuzzgen.projects(), edits=_steps("json"))
def test_json_cache(fuzz: Session, project: Project, edits: list[Edit]) -> None:
    run_scenario(fuzz, "json", project, edits)


@settings(_settings("n2"))
@given(project=fuzzgen.projects(), edits=_steps("n2"))
def test_parallel_workers(fuzz: Session, project: Project, edits: list[Edit]) -> None:
    run_scenario(fuzz, "n2", project, edits)


_MISSING_A = "import nothere\nx: int = {}\n"
_MISSING_B = "import nothere\ny: int = {}\n"


def test_stock_incremental_artefacts(stock_harness: Harness, tmp_path: Path) -> None:
    """Stock incremental mypy (no store) differs from ``--no-incremental`` in exactly the two
    ways :func:`by_file` forgives: files reported in another order, and an only-once note
    printed twice (a cached module replays it while a re-checked one reports it again). If
    this fails, mypy fixed it and the fuzzer's normalisation should go."""
    h = stock_harness
    proj = tmp_path / "proj"
    cache = tmp_path / "cache"
    args = ["a.py", "b.py"]
    gen.write_tree(proj, {"a.py": _MISSING_A.format(1), "b.py": _MISSING_B.format(1)})
    h.assert_exact(h.stock(proj, args, cache_dir=cache, verbose=False), oracle_args=args)
    gen.write_tree(proj, {"a.py": _MISSING_A.format(1), "b.py": _MISSING_B.format(2)})
    stock = h.stock(proj, args, cache_dir=cache, verbose=False)
    oracle = h.oracle(proj, args)
    note = "note: See https://mypy.readthedocs.io/en/stable/running_mypy.html#missing-imports"
    assert oracle.stdout.count(note) == 1
    assert stock.stdout.count(note) == 2, stock.stdout
    assert stock.stdout.splitlines()[0].startswith("a.py"), stock.stdout
    assert oracle.stdout.splitlines()[0].startswith("b.py"), oracle.stdout
    assert stock.returncode == oracle.returncode
    assert by_file(stock.stdout) == by_file(oracle.stdout)


#: The long profile's finding of session 10 (issue 28), shrunk by hand: ``pa.m1`` imports
#: ``pb.m0``; ``pb.m0`` goes (``pb`` stays, so the meta records ``pb`` as a dependency and
#: ``pb.m0`` as suppressed); then the package ``pb`` goes. ``pb`` is near enough to the
#: stdlib's ``pdb`` for mypy to add 'Did you mean "pdb"?' after the first of the two
#: errors (both report it; mypy prints it once per line). Each step: (files, mypy's args).
_ONE_LINE_STEPS: tuple[tuple[dict[str, str | None], list[str]], ...] = (
    ({"pb/__init__.py": "", "pb/m0.py": "x = 1\n", "pa/__init__.py": "",
      "pa/m1.py": "import pb.m0\n"}, ["pa", "pb"]),
    ({"pb/m0.py": None}, ["pa", "pb"]),
    ({"pb/__init__.py": None}, ["pa"]),
)
_NOT_FOUND = 'pa/m1.py:1: error: Cannot find implementation or library stub for module named'
_DID_YOU_MEAN = 'pa/m1.py:1: note: Did you mean "pdb"?'


def _one_line_steps(h: Harness, proj: Path, run: Callable[[list[str]], RunResult]
                    ) -> tuple[RunResult, RunResult]:
    """Run ``_ONE_LINE_STEPS`` with ``run``; the last step's result and its oracle's."""
    for files, args in _ONE_LINE_STEPS:
        for name, text in files.items():
            if text is None:
                (proj / name).unlink()
                if not any((proj / name).parent.iterdir()):
                    (proj / name).parent.rmdir()  # an empty directory is a namespace package
            else:
                (proj / name).parent.mkdir(parents=True, exist_ok=True)
                (proj / name).write_text(text)
        result = run(args)
    return result, h.oracle(proj, args)


def test_stock_incremental_reorders_errors_of_one_line(stock_harness: Harness,
                                                       tmp_path: Path) -> None:
    """Stock incremental mypy (no store) reports two missing imports of one line in another
    order than ``--no-incremental``: the cached meta of ``pa.m1`` lists ``pb`` among its
    dependencies and ``pb.m0`` among the suppressed, and mypy's ``load_graph`` walks
    dependencies before suppressed ones, where a fresh parse lists them in source order;
    the note both errors report follows the first. :func:`by_file` forgives exactly that
    (the lines of one source line sorted). If this fails, mypy changed and the rule should
    be looked at again."""
    h = stock_harness
    proj = tmp_path / "proj"
    cache = tmp_path / "cache"
    stock, oracle = _one_line_steps(h, proj, lambda args: h.stock(proj, args, cache_dir=cache,
                                                                  verbose=False))
    first, second = (f'{_NOT_FOUND} "pb.m0"  [import-not-found]',
                     f'{_NOT_FOUND} "pb"  [import-not-found]')
    for out, errors in ((oracle.stdout, [first, second]), (stock.stdout, [second, first])):
        lines = out.splitlines()
        assert [x for x in lines if " error: " in x] == errors, out
        if _DID_YOU_MEAN in lines:  # mypy 2.x: after the first error only
            assert lines.count(_DID_YOU_MEAN) == 1, out
            assert lines[lines.index(errors[0]) + 1] == _DID_YOU_MEAN, out
    assert stock.returncode == oracle.returncode == 1
    assert by_file(stock.stdout) == by_file(oracle.stdout)


@pytest.mark.parametrize("mode", ["ff", "json"])
def test_regression_errors_of_one_line(harness: Harness, tmp_path: Path, mode: str) -> None:
    """The same steps through the store (issue 28 saw them in JSON mode): the store serves
    the meta mypy itself wrote, so its report is stock incremental mypy's to the byte, and
    differs from the oracle only in that order."""
    h = harness
    stock_proj, proj = tmp_path / "stock", tmp_path / "proj"
    cache = tmp_path / "stock-cache"
    stock, _ = _one_line_steps(h, stock_proj, lambda args: h.stock(
        stock_proj, [*MODES[mode], *args], cache_dir=cache, verbose=False))
    run, oracle = _one_line_steps(h, proj, lambda args: h.dropin(proj, [*MODES[mode], *args],
                                                                 verbose=False))
    problem = _compare(h, run, oracle)
    assert problem is not None and problem[0] == "artefact", problem or run.describe()
    assert (run.stdout, run.returncode) == (stock.stdout, stock.returncode)


def test_regression_missing_import_note(harness: Harness, tmp_path: Path) -> None:
    """The fuzzer's first finding (two modules importing one missing module, one of them
    edited): through the store, the output differs from the oracle only as stock
    incremental mypy's does (see test_stock_incremental_artefacts), never otherwise."""
    h = harness
    proj = tmp_path / "proj"
    args = ["a.py", "b.py"]
    for n in (1, 2, 1, 3):
        gen.write_tree(proj, {"a.py": _MISSING_A.format(1), "b.py": _MISSING_B.format(n)})
        run = h.dropin(proj, args, verbose=False)
        problem = _compare(h, run, h.oracle(proj, args))
        assert problem is None or problem[0] == "artefact", problem


def test_regression_two_options_for_one_module_are_one_section() -> None:
    """The long profile's finding of session 4 (a generator bug, not the store's): two
    option edits of one module rendered two ``[mypy-pa.m1]`` sections, an invalid ini file
    that mypy refuses (and the store says so). They are one section now."""
    import configparser

    project = Project(mods=(fuzzgen.Mod("pa.m0", 0), fuzzgen.Mod("pa.m1", 1)),
                      options=frozenset({("pa.m1", fuzzgen.OPTIONS[3]),
                                         ("pa.m1", fuzzgen.OPTIONS[1])}))
    parser = configparser.RawConfigParser()
    parser.read_string(fuzzgen.render(project)[fuzzgen.CONFIG])
    assert parser.has_option("mypy-pa.m1", "check_untyped_defs")
    assert parser.has_option("mypy-pa.m1", "ignore_errors")
