"""``metastore bench``: stock mypy against mypy through the store, on the user's own project.

Runs the scenarios of ``scenarios.md`` that apply to one project - P1 cold, P2 warm,
P3 the tree copied to a new path, P5 one edit, P7 concurrent runs - with stock mypy and
with the store, interleaved (stock, store, stock, store, ...) in one process tree, in
temporary copies of the project: the user's tree, caches and store are never touched.
Every output is compared with ``mypy --no-incremental`` on the same tree (see
:func:`report` for the two differences stock incremental mypy has by itself).

The report is a table (or JSON): per scenario the median wall time of each side, their
ratio, the modules each re-checked (from mypy's ``-v`` log), the bytes the store read and
wrote (its ``--metastore-stats`` line) and the peak RSS of each side's processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = ["BenchError", "Measurement", "fresh", "lines_by_file", "report", "run_bench"]

#: Directories never copied into the benchmark's trees: tool data at any depth, and
#: environments and build output at the project's top only (``pkg/build/`` may be a
#: subpackage, as ``pip._internal.operations.build`` is).
_SKIP_ANYWHERE = frozenset({".git", ".hg", ".svn", ".mypy_cache", ".tox", ".nox",
                            "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"})
_SKIP_AT_TOP = _SKIP_ANYWHERE | {".venv", "venv", "env", "build", "dist"}
_SCHED = re.compile(r"LOG:  Scheduling SCC (?:singleton|of size (\d+)) \(")
_STATS = re.compile(r"^mypy-metastore: .*?read_bytes=(\d+) written_bytes=(\d+)", re.M)
# Notes mypy reports once per build (``only_once=True`` in mypy/build.py and errors.py). In
# incremental mode a module's cached errors replay such a note even when a re-checked module
# reports it again, so stock incremental mypy prints it twice where ``--no-incremental``
# prints it once (tests/test_fuzz_differential.py shows it without the store).
_ONLY_ONCE_NOTE = re.compile(
    r"^[^:]+:\d+(?::\d+)?: note: (See https://|\(Skipping most remaining errors|"
    r"\(Using --follow-imports=error|Hint: |Ancestor package )")
# A message's source position: ``file:line`` (a column after it belongs to the same line).
_POSITION = re.compile(r"^[^:]+:\d+")
SCENARIOS = ("P1", "P2", "P3", "P5", "P7")
DESCRIPTIONS = {
    "P1": "cold run, empty cache",
    "P2": "warm run, same directory, nothing changed",
    "P3": "same tree at a new path, new mtimes, cache shared",
    "P5": "one edit (a comment) in one module, then run",
    "P7": "concurrent runs over 2 versions on one cache (total wall)",
}


class BenchError(Exception):
    """A problem that stops the benchmark; ``str()`` is one line."""


class Run(NamedTuple):
    """One finished mypy process."""

    seconds: float
    stdout: str
    returncode: int
    rechecked: int
    read_bytes: int
    written_bytes: int
    max_rss_kib: int
    stderr: str


class Measurement(NamedTuple):
    """The medians of one scenario (``None`` where a side does not apply)."""

    scenario: str
    stock_seconds: float
    store_seconds: float
    stock_rechecked: float
    store_rechecked: float
    store_read_bytes: float
    store_written_bytes: float
    stock_max_rss_kib: int
    store_max_rss_kib: int
    stock_failures: int
    store_failures: int
    exact: bool

    @property
    def ratio(self) -> float:
        return self.store_seconds / self.stock_seconds if self.stock_seconds else float("nan")


def _run(argv: Sequence[str], cwd: str, env: dict[str, str]) -> Run:
    """Run one process; its peak RSS comes from ``os.wait4`` (this process only)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    stats = _STATS.search(stderr)
    return Run(seconds, stdout, proc.returncode,
               sum(int(m.group(1) or 1) for m in _SCHED.finditer(stderr)),
               int(stats.group(1)) if stats else 0, int(stats.group(2)) if stats else 0,
               usage.ru_maxrss, stderr)


Report = tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...], int]


def report(stdout: str, returncode: int) -> Report:
    """What two mypy runs must agree on: each file's lines in order, the other lines (the
    summary) and the exit status. Left out: the order in which files are reported, only-once
    notes and the order of the lines about one source line, where stock incremental mypy
    differs from ``--no-incremental`` by itself (cached modules' errors are replayed as they
    are loaded, with their notes; see :func:`lines_by_file`)."""
    files, rest = lines_by_file(
        stdout, lambda name: name.endswith((".py", ".pyi", ".ini", ".toml", ".cfg")))
    return (tuple(sorted((name, tuple(lines)) for name, lines in files.items())),
            tuple(rest), returncode)


def lines_by_file(stdout: str, names_a_file: Callable[[str], bool]
                  ) -> tuple[dict[str, list[str]], list[str]]:
    """mypy's report as ``{file: its lines}`` and the lines that name no file (the summary),
    leaving out only-once notes. A line names a file when the text before its first colon
    satisfies ``names_a_file``.

    Each file's lines keep their order, except that a run of consecutive lines about one
    source line (one ``file:line`` position) is sorted: stock incremental mypy reports the
    missing imports of one line in the order its cached meta lists them (dependencies, then
    suppressed ones), where ``--no-incremental`` reports them in source order, and a note
    both would report (``Did you mean "pdb"?`` for ``pb`` and ``pb.m1``), which mypy prints
    once per line, follows whichever comes first (tests/test_fuzz_differential.py shows it
    without the store). Lines of different positions are never reordered."""
    files: dict[str, list[str]] = {}
    rest: list[str] = []
    for line in stdout.splitlines():
        if _ONLY_ONCE_NOTE.match(line):
            continue
        name, sep, _ = line.partition(":")
        if sep and names_a_file(name):
            files.setdefault(name, []).append(line)
        else:
            rest.append(line)
    return {name: _sorted_within_positions(lines) for name, lines in files.items()}, rest


def _sorted_within_positions(lines: list[str]) -> list[str]:
    """``lines`` with each run of consecutive lines of one position sorted."""
    runs: list[list[str]] = []
    last: str | None = None
    for line in lines:
        m = _POSITION.match(line)
        position = m.group(0) if m else None
        if position is None or position != last:
            runs.append([])
        runs[-1].append(line)
        last = position
    return [line for run in runs for line in sorted(run)]


def fresh(path: str) -> str:
    """``path`` with nothing at it: a directory, or a store file with its -wal/-shm, removed."""
    shutil.rmtree(path, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        if os.path.isfile(path + suffix):
            os.remove(path + suffix)
    return path


def _skipped(top: str, directory: str, names: Sequence[str]) -> list[str]:
    skip = _SKIP_AT_TOP if os.path.normpath(directory) == os.path.normpath(top) else _SKIP_ANYWHERE
    return [n for n in names if n in skip]


def _copy_tree(src: str, dest: str) -> None:
    shutil.copytree(src, dest, symlinks=True,
                    ignore=lambda directory, names: _skipped(src, directory, names))


def _edit_target(tree: str) -> str:
    """The module the P5 edit touches: the largest .py file (deterministic)."""
    best: tuple[int, str] | None = None
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(set(dirs) - set(_skipped(tree, root, dirs)))
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                size = os.path.getsize(path)
                if best is None or size > best[0]:
                    best = (size, path)
    if best is None:
        raise BenchError("no .py file in the project; run 'metastore bench' in the project")
    return os.path.relpath(best[1], tree)


def _append_comment(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"\n# {text}\n")


def run_bench(project: str, mypy_args: Sequence[str], *, runs: int = 3, concurrency: int = 4,
              progress: Callable[[str], None] | None = None,
              python: str = sys.executable) -> list[Measurement]:
    """Benchmark ``mypy_args`` on a copy of ``project``; return one Measurement per scenario.

    Raises BenchError if the project cannot be copied or mypy cannot run at all.
    """
    say = progress or (lambda _msg: None)
    if runs < 1:
        raise BenchError("--runs must be at least 1")
    work = tempfile.mkdtemp(prefix="metastore-bench-")
    try:
        return _bench(os.path.abspath(project), list(mypy_args), runs, concurrency, say,
                      python, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(project: str, args: list[str], runs: int, concurrency: int,
           say: Callable[[str], None], python: str, work: str) -> list[Measurement]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY_METASTORE")}
    env.pop("PYTHONUNBUFFERED", None)
    env["MYPY_METASTORE"] = "0"  # stock runs must not pick the store up from a config file
    ours_env = dict(env)
    del ours_env["MYPY_METASTORE"]
    base = os.path.join(work, "tree")
    try:
        _copy_tree(project, base)
    except OSError as e:
        raise BenchError(f"cannot copy {project} to {base}: {e}") from e
    target = _edit_target(base)

    def stock(cache: str) -> list[str]:
        return [python, "-m", "mypy", "--cache-dir", cache, "-v", *args]

    def ours(store: str, cache: str) -> list[str]:
        return [python, "-m", "metastore.seams.dropin", "--metastore-store", store,
                "--metastore-stats", "--cache-dir", cache, "-v", *args]

    oracles: dict[str, Report] = {}

    def oracle(tree: str, label: str) -> Report:
        if label not in oracles:
            r = _run([python, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
                      *args], tree, env)
            if r.returncode not in (0, 1):
                raise BenchError(f"mypy fails on this project (exit {r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            oracles[label] = report(r.stdout, r.returncode)
        return oracles[label]

    say("oracle (mypy --no-incremental)")
    oracle(base, "A")
    results: dict[str, tuple[list[Run], list[Run], bool]] = {s: ([], [], True) for s in SCENARIOS}

    def record(scenario: str, tree: str, label: str, s_cmd: list[str], o_cmd: list[str]) -> None:
        s = _run(s_cmd, tree, env)
        o = _run(o_cmd, tree, ours_env)
        want = oracle(tree, label)
        stock_runs, our_runs, exact = results[scenario]
        stock_runs.append(s)
        our_runs.append(o)
        results[scenario] = (stock_runs, our_runs,
                             exact and report(o.stdout, o.returncode) == want
                             and report(s.stdout, s.returncode) == want)

    stock_cache, store_cache = os.path.join(work, "stock-cache"), os.path.join(work, "our-cache")
    store = os.path.join(work, "store.db")
    for i in range(runs):
        say(f"run {i + 1}/{runs}: P1 cold")
        record("P1", base, "A", stock(fresh(stock_cache)), ours(fresh(store), fresh(store_cache)))
        say(f"run {i + 1}/{runs}: P2 warm")
        record("P2", base, "A", stock(stock_cache), ours(store, store_cache))
        say(f"run {i + 1}/{runs}: P3 copy")
        copy = os.path.join(work, f"copy{i}")
        _copy_tree(base, copy)
        record("P3", copy, "A", stock(stock_cache), ours(store, store_cache))
        shutil.rmtree(copy, ignore_errors=True)
        say(f"run {i + 1}/{runs}: P5 one edit")
        edited = os.path.join(work, f"edit{i}")
        _copy_tree(base, edited)
        # Warm both caches on this path first, then edit and measure the next run.
        _run(stock(stock_cache), edited, env)
        _run(ours(store, store_cache), edited, ours_env)
        _append_comment(os.path.join(edited, target), f"metastore bench edit {i}")
        oracles.pop("edit", None)
        record("P5", edited, "edit", stock(stock_cache), ours(store, store_cache))
        shutil.rmtree(edited, ignore_errors=True)
    say(f"P7: {concurrency} concurrent runs, two versions, stock then store")
    p7 = _concurrent(base, target, concurrency, work, args, python, env, ours_env, stock, ours)
    measurements = [_summarise(name, *results[name]) for name in SCENARIOS if name != "P7"]
    measurements.append(p7)
    return measurements


def _concurrent(base: str, target: str, n: int, work: str, args: list[str], python: str,
                env: dict[str, str], ours_env: dict[str, str],
                stock: Callable[[str], list[str]], ours: Callable[[str, str], list[str]]
                ) -> Measurement:
    """P7: ``n`` processes at once over two versions of the tree, each in its own copy,
    on one shared cache; failures are outputs that differ from the oracle of their tree."""
    trees = []
    for i in range(n):
        tree = os.path.join(work, f"p7-{i}")
        _copy_tree(base, tree)
        if i % 2:
            _append_comment(os.path.join(tree, target), "metastore bench version B")
        trees.append(tree)
    want = []
    for tree in trees[:2]:
        r = _run([python, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull, *args],
                 tree, env)
        want.append(report(r.stdout, r.returncode))
    sides: list[tuple[float, list[Run]]] = []
    for side in ("stock", "store"):
        cache = fresh(os.path.join(work, f"p7-{side}-cache"))
        store = fresh(os.path.join(work, "p7-store.db"))
        t0 = time.perf_counter()
        procs = []
        for tree in trees:
            cmd = stock(cache) if side == "stock" else ours(store, cache)
            out = tempfile.TemporaryFile()
            err = tempfile.TemporaryFile()
            procs.append((subprocess.Popen(cmd, cwd=tree, env=env if side == "stock"
                                           else ours_env, stdout=out, stderr=err), out, err))
        finished = []
        for proc, out, err in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(
                errors="replace")
            out.close()
            err.close()
            finished.append(Run(0.0, stdout, proc.returncode, 0, 0, 0, usage.ru_maxrss,
                                stderr))
        sides.append((time.perf_counter() - t0, finished))
    failures = [sum(report(r.stdout, r.returncode) != want[i % 2] or "Traceback" in r.stderr
                    or "INTERNAL ERROR" in r.stderr for i, r in enumerate(runs))
                for _, runs in sides]
    (t_stock, stock_runs), (t_store, store_runs) = sides
    return Measurement("P7", t_stock, t_store, 0, 0, 0, 0,
                       max(r.max_rss_kib for r in stock_runs),
                       max(r.max_rss_kib for r in store_runs),
                       failures[0], failures[1], failures[1] == 0)


def _summarise(name: str, stock_runs: list[Run], our_runs: list[Run],
               exact: bool) -> Measurement:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return Measurement(
        name, med([r.seconds for r in stock_runs]), med([r.seconds for r in our_runs]),
        med([r.rechecked for r in stock_runs]), med([r.rechecked for r in our_runs]),
        med([r.read_bytes for r in our_runs]), med([r.written_bytes for r in our_runs]),
        max(r.max_rss_kib for r in stock_runs), max(r.max_rss_kib for r in our_runs),
        sum(r.returncode not in (0, 1) for r in stock_runs),
        sum(r.returncode not in (0, 1) for r in our_runs), exact)


def format_table(measurements: Sequence[Measurement], header: str) -> str:
    """The human-readable report."""
    lines = [header,
             f"{'':3} {'stock s':>8} {'store s':>8} {'ratio':>6} {'stock re':>8} "
             f"{'store re':>8} {'read':>9} {'written':>9} {'stock RSS':>10} {'store RSS':>10}"
             "  exact  scenario"]
    for m in measurements:
        lines.append(
            f"{m.scenario:3} {m.stock_seconds:8.3f} {m.store_seconds:8.3f} {m.ratio:6.2f} "
            f"{m.stock_rechecked:8.0f} {m.store_rechecked:8.0f} {_kib(m.store_read_bytes):>9} "
            f"{_kib(m.store_written_bytes):>9} {m.stock_max_rss_kib / 1024:8.0f}Mi "
            f"{m.store_max_rss_kib / 1024:8.0f}Mi  {'yes' if m.exact else 'NO':5}  "
            f"{DESCRIPTIONS[m.scenario]}"
            + (f" (failures: stock {m.stock_failures}, store {m.store_failures})"
               if m.scenario == "P7" else ""))
    return "\n".join(lines)


def as_json(measurements: Sequence[Measurement], header: str) -> str:
    rows: list[dict[str, Any]] = []
    for m in measurements:
        row = m._asdict()
        row["ratio"] = m.ratio
        row["description"] = DESCRIPTIONS[m.scenario]
        rows.append(row)
    return json.dumps({"environment": header, "scenarios": rows}, indent=2)


def _kib(n: float) -> str:
    return f"{n / 1024:.0f}Ki" if n else "-"
