"""Load and crash harnesses (issue 5): many uncoordinated processes on one store.

- :func:`run_load`: ``procs`` processes at a time, ``procs * rounds`` runs in all, each on a
  version of a generated project and an option set drawn by a seeded RNG, every fourth with
  ``-n 2``; every run's stdout and exit status are compared with the ``--no-incremental``
  oracle of its (version, options), and its stderr is searched for what must never reach a
  user. ``kind="dropin"`` runs the product on one shared store (each run with a fresh
  ``--cache-dir``, so everything warm comes from the store); ``kind="stock"`` runs stock
  mypy sharing ONE ``--cache-dir`` (what people do without the store: its failures are a
  finding to report, not a test failure).
- :func:`run_crashes`: ``kill -9`` (of the whole process group) of drop-in runs that are
  publishing and of maintenance commands (gc, merge, export, verify --repair) at random
  moments; after each kill ``metastore verify`` must pass.

Profiles: :data:`CI` (bounded, in the default suite) and :data:`LONG` (``tox -e stress``),
chosen by ``METASTORE_STRESS=long``; ``METASTORE_STRESS_RUNS`` / ``METASTORE_STRESS_KILLS``
override the totals.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from helpers import gen
from helpers.run import (
    CREATED_PREFIX,
    FORBIDDEN,
    MESSAGE_PREFIX,
    STATS_PREFIX,
    Harness,
    Pending,
    RunResult,
    by_file,
)
from helpers.venvs import mypy_version

SPEC = gen.ProjectSpec(packages=3, modules_per_package=4)
OPTION_SETS: tuple[tuple[str, ...], ...] = ((), ("--disallow-untyped-defs",),
                                             ("--warn-return-any", "--strict-equality"))


@dataclass(frozen=True)
class Profile:
    name: str
    procs: int
    rounds: int
    kills: int


CI = Profile("ci", procs=8, rounds=2, kills=10)
LONG = Profile("long", procs=32, rounds=63, kills=320)


def profile() -> Profile:
    base = LONG if os.environ.get("METASTORE_STRESS") == "long" else CI
    runs = os.environ.get("METASTORE_STRESS_RUNS")
    kills = os.environ.get("METASTORE_STRESS_KILLS")
    rounds = max(1, -(-int(runs) // base.procs)) if runs else base.rounds
    return Profile(base.name, base.procs, rounds, int(kills) if kills else base.kills)


def make_versions(root: Path) -> dict[str, Path]:
    """Three versions of the project, each in its own directory under ``root``."""
    a = gen.generate(SPEC)
    trees = {"A": a, "B": gen.version_b(a, SPEC), "C": gen.edit_core(a, 1)}
    dirs = {}
    for name, files in trees.items():
        dirs[name] = root / f"version-{name}"
        gen.write_tree(dirs[name], files)
    return dirs


@dataclass
class LoadReport:
    kind: str
    runs: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: runs whose only problem was mypy's worker start-up race (see WORKER_START_RACE)
    worker_races: list[str] = field(default_factory=list)
    #: runs whose output differed from the oracle only as stock incremental mypy's does
    #: (files reported in another order, only-once notes: see helpers.run.by_file)
    order_only: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"load[{self.kind}]: runs={self.runs} failures={len(self.failures)} "
                f"mypy_worker_start_races={len(self.worker_races)} "
                f"file_order_only={len(self.order_only)} "
                f"seconds={self.seconds:.1f} throughput={self.throughput:.2f} runs/s")


#: mypy's own parallel-worker start-up race (mypy/build_worker/worker.py): the coordinator
#: waits WORKER_START_TIMEOUT (3 s) for a worker, then finishes without it and deletes the
#: options file; a worker starting later than that (a machine overloaded many times over)
#: prints a traceback and INTERNAL ERROR. Stock mypy does the same; counted apart, for both.
WORKER_START_RACE = re.compile(
    r"Traceback \(most recent call last\):\n(?:  .*\n)*?.*build_worker/worker\.py.*\n"
    r"(?:  .*\n)*TimeoutError: Failed to read \S*\.worker_options\.\w+\.data: .*\n"
    r"error: INTERNAL ERROR -- .*\n(?:.*\n){1,3}?version: [^\n]*\n"
    r"note: please use --show-traceback[^\n]*\n")

#: mypy 1.20's parallel mode fails on its own when several builds start at once (stock
#: mypy 1.20.2, 6 concurrent ``-n 2`` runs with separate cache dirs: 5 exit 2 with
#: ``TypeError: mypy.ipc.BadStatus object expected; got AssertionError`` in
#: ``build.connect``), so on 1.20 the load and crash harnesses run serial mypy only.
PARALLEL_UNDER_LOAD = mypy_version() >= (2, 0)

#: ... and what mypy's coordinator says (exit status 2) when its workers are that late.
WORKER_NOT_STARTED = "Failed to establish connection with worker: No status file found"


#: The reason :func:`_problem` gives for a report that differs from the oracle only in the
#: ways stock incremental mypy's does (see helpers.run.by_file): counted, not a failure.
ORDER_ONLY = "files reported in another order than --no-incremental, as stock mypy does"


def _problem(h: Harness, run: RunResult, oracle: RunResult, *, ours: bool) -> str | None:
    """Why ``run`` failed, or None. A run whose only problem is :data:`WORKER_START_RACE`
    fails with a reason starting "mypy worker start-up race"; one whose report differs only
    in file order, with a reason starting :data:`ORDER_ONLY`."""
    if run.returncode == 2 and WORKER_NOT_STARTED in run.stdout:
        return "mypy worker start-up race (mypy gave up waiting for its workers)"
    stderr, race = WORKER_START_RACE.subn("", run.stderr)
    if race:
        run = dataclasses.replace(run, stderr=stderr)
        why = _problem(h, run, oracle, ours=ours)
        return why or f"mypy worker start-up race ({race} worker(s) too slow to start)"
    for bad in FORBIDDEN:
        if bad in run.stderr:
            at = run.stderr.index(bad)
            return f"{bad!r} on stderr: {run.stderr[at:at + 1500]!r}"
    if ours:
        extra = [ln for ln in run.stderr.splitlines()
                 if ln.startswith(MESSAGE_PREFIX)
                 and not ln.startswith((STATS_PREFIX, CREATED_PREFIX))]
        if extra:
            return f"unexpected message {extra[0]!r}"
    got, want = h.normalise(run.stdout), h.normalise(oracle.stdout)
    if got == want and run.returncode == oracle.returncode:
        return None
    if run.returncode == oracle.returncode and by_file(got) == by_file(want):
        return f"{ORDER_ONLY}: {got[-300:]!r}"
    return (f"output differs from the oracle (exit {run.returncode} vs "
            f"{oracle.returncode}): {got[-300:]!r}")


def run_load(h: Harness, dirs: dict[str, Path], *, kind: str, procs: int, rounds: int,
             seed: int = 0, shared_cache: Path | None = None) -> LoadReport:
    """See the module docstring. Never raises for a failed run: failures are collected."""
    rng = random.Random(seed)
    jobs = []
    for i in range(procs * rounds):
        name = rng.choice(sorted(dirs))
        opts = rng.choice(OPTION_SETS)
        args = (*opts, "-n", "2") if i % 4 == 3 and PARALLEL_UNDER_LOAD else opts
        jobs.append((name, args))
    # The oracle of a -n 2 run is the serial --no-incremental run (mypy runs -n only
    # incrementally).
    oracles = {(name, args): h.oracle(dirs[name], [a for a in args if a not in ("-n", "2")])
               for name, args in set(jobs)}
    report = LoadReport(kind)
    running: list[tuple[str, tuple[str, ...], Pending]] = []
    cache = shared_cache or h.tmp / "stock-shared-cache"
    start = time.monotonic()
    todo = list(jobs)

    def collect(entry: tuple[str, tuple[str, ...], Pending]) -> None:
        name, args, pending = entry
        try:
            run = pending.wait()
        except AssertionError as e:  # timed out
            report.failures.append(f"{kind} {name} {args}: {str(e)[:300]}")
            return
        report.runs += 1
        why = _problem(h, run, oracles[(name, args)], ours=(kind == "dropin"))
        if why is not None and why.startswith("mypy worker start-up race"):
            report.worker_races.append(f"{kind} {name} {' '.join(args)}: {why}")
        elif why is not None and why.startswith(ORDER_ONLY):
            report.order_only.append(f"{kind} {name} {' '.join(args)}: {why}")
        elif why is not None:
            report.failures.append(f"{kind} {name} {' '.join(args)}: {why}")

    while todo or running:
        while todo and len(running) < procs:
            name, args = todo.pop(0)
            if kind == "dropin":
                p = h.start_dropin(dirs[name], args, cache_dir=h.fresh_cache_dir(),
                                   verbose=False)
            else:
                argv = [h.oracle_python, "-m", "mypy", f"--cache-dir={cache}", *args]
                p = Pending(argv, dirs[name], h.env, args, "stock", h.oracle_python,
                            h.timeout)
            running.append((name, args, p))
        done = [e for e in running if e[2].proc.poll() is not None]
        if not done:
            time.sleep(0.02)
            continue
        for e in done:
            running.remove(e)
            collect(e)
    report.seconds = time.monotonic() - start
    return report


def admin(h: Harness, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m metastore ARGS`` with the product's interpreter."""
    return subprocess.run([h.product.python, "-m", "metastore", *args], cwd=h.tmp,
                          env=h._product_env(None), capture_output=True, text=True,
                          timeout=timeout)


def start_admin(h: Harness, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([h.product.python, "-m", "metastore", *args], cwd=h.tmp,
                            env=h._product_env(None), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)


@dataclass
class CrashReport:
    kills: int = 0
    finished_before_kill: int = 0
    verify_failures: list[str] = field(default_factory=list)
    by_victim: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        kinds = " ".join(f"{k}={v}" for k, v in sorted(self.by_victim.items()))
        return (f"crash: kills={self.kills} (finished first: {self.finished_before_kill}) "
                f"verify_failures={len(self.verify_failures)} seconds={self.seconds:.1f} "
                f"victims: {kinds}")


VICTIMS: Sequence[str] = ("publish", "publish-n2", "gc", "merge", "export", "repair")


def run_crashes(h: Harness, other: Path, *, kills: int, seed: int = 0) -> CrashReport:
    """``kills`` times: start a victim on ``h.store`` (a drop-in run on a new version of the
    project with a fresh ``--cache-dir``, or a maintenance command; ``other`` is a store to
    merge from),
    SIGKILL its process group after a random delay, then run ``metastore verify``."""
    rng = random.Random(seed)
    report = CrashReport()
    start = time.monotonic()
    exports = h.tmp / "exports"
    exports.mkdir(exist_ok=True)
    # How long each kind of victim takes when left alone (updated whenever one finishes
    # first): the kill lands at a uniformly random moment of its expected life.
    life = dict.fromkeys(VICTIMS, 1.0)
    i = 0
    while report.kills < kills and i < 3 * kills:
        i += 1
        victim = VICTIMS[i % len(VICTIMS)]
        store = str(h.store)
        proc: subprocess.Popen[str]
        if victim.startswith("publish"):
            # A version of the core module not seen before: the run re-checks and publishes
            # nearly every module, so the kill lands in mypy's work or in a publish.
            edited = h.tmp / "edited"
            gen.write_tree(edited, gen.edit_core(gen.generate(SPEC), 2 + i))
            parallel = victim == "publish-n2" and PARALLEL_UNDER_LOAD
            args = rng.choice(OPTION_SETS) + (("-n", "2") if parallel else ())
            proc = h.start_dropin(edited, args, cache_dir=h.fresh_cache_dir(),
                                  verbose=False).proc
            delay = rng.uniform(0.3, 0.95 * life[victim])
        elif victim == "gc":
            proc = start_admin(h, "--store", store, "gc", "--max-size", "0", "--older-than",
                               "0")
            delay = rng.uniform(0.02, 0.95 * life[victim])
        elif victim == "merge":
            proc = start_admin(h, "merge", str(other), "--into", store)
            delay = rng.uniform(0.02, 0.95 * life[victim])
        elif victim == "export":
            proc = start_admin(h, "--store", store, "export", str(exports / f"out-{i}.db"))
            delay = rng.uniform(0.02, 0.95 * life[victim])
        else:
            proc = start_admin(h, "--store", store, "verify", "--repair")
            delay = rng.uniform(0.02, 0.95 * life[victim])
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < delay:
            time.sleep(0.005)
        if proc.poll() is not None:
            life[victim] = max(0.05, time.monotonic() - started)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            report.kills += 1
            report.by_victim[victim] = report.by_victim.get(victim, 0) + 1
        else:
            report.finished_before_kill += 1
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        out = admin(h, "--store", store, "verify")
        if out.returncode != 0:
            report.verify_failures.append(f"after {victim} #{i}: {out.stdout}{out.stderr}")
    report.seconds = time.monotonic() - start
    return report
