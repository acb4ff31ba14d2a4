"""Running stock mypy, the oracle and the drop-in as real processes, and reading their output.

- :func:`clean_env`: an environment isolated from the user's (HOME, XDG dirs in a temporary
  directory; every ``MYPY*`` variable removed, so ``MYPY_METASTORE_*``, ``MYPY_FORCE_COLOR``,
  ``MYPY_CACHE_DIR``, ``MYPYPATH``, ``MYPY_NUM_WORKERS`` never leak in).
- :class:`Harness`: one per test; runs the drop-in (``python -m metastore.seams.dropin`` with
  ``--metastore-store``, ``--metastore-stats``, ``-v`` and a ``--cache-dir`` of its own; through
  the ``--cache-store`` option instead of the SQL seam if ``METASTORE_E2E_VIA=cache-store``), stock
  incremental mypy, and the oracle (``mypy --no-incremental --cache-dir=/dev/null`` on the same
  tree with the same other arguments, memoised on the tree's content), and checks results.
- :class:`Verbose` parses ``mypy -v`` stderr: modules re-checked (the sum over ``Scheduling SCC``
  lines) and the ``Build finished … with N modules`` figure (trees loaded).
- :class:`Stats` parses the drop-in's one stats line.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metastore.cli.bench import lines_by_file

DEFAULT_TIMEOUT = 180.0
#: ``METASTORE_E2E_VIA=cache-store``: drop-in runs get ``MYPY_METASTORE_VIA=cache-store``, so
#: the store reaches mypy through the ``--cache-store`` option of a patched mypy (patches/)
#: instead of the SQL seam. Unset (the default): the seam.
VIA = os.environ.get("METASTORE_E2E_VIA", "")

# Matched anywhere in a line: with ``-n N`` mypy's workers share the coordinator's stderr, and
# a worker's partial line may precede a coordinator's line ("LOG:  LOG:  Scheduling ...").
_SINGLETON = re.compile(r"LOG:  Scheduling SCC singleton \((?P<mods>[^()]*)\) as (?P<why>.*)$")
_SIZED = re.compile(
    r"LOG:  Scheduling SCC of size (?P<size>\d+) \((?P<mods>[^()]*)\) as (?P<why>.*)$"
)
_FINISHED = re.compile(
    r"LOG:  Build finished in (?P<seconds>\d+(?:\.\d+)?) seconds with (?P<modules>\d+) modules"
)
_STATS = re.compile(
    r"^mypy-metastore: offered=(?P<offered>\d+) missed=(?P<missed>\d+)"
    r" rechecked=(?P<rechecked>\d+) published=(?P<published>\d+)"
    r" meta_writes=(?P<meta_writes>\d+) read_bytes=(?P<read_bytes>\d+)"
    r" written_bytes=(?P<written_bytes>\d+) store_seconds=(?P<store_seconds>\d+(?:\.\d+)?)"
    r" layer_hits=(?P<layer_hits>\d+(?:,\d+)*) ambiguous=(?P<ambiguous>\d+)"
    r" search_steps=(?P<search_steps>\d+) mismatched=(?P<mismatched>\d+)"
    r" select_seconds=(?P<select_seconds>\d+(?:\.\d+)?) store=(?P<store>.+)$"
)
STATS_PREFIX = "mypy-metastore: offered="
#: The line after the stats line when a remote tier is configured.
REMOTE_STATS_PREFIX = "mypy-metastore: remote_hits="
MESSAGE_PREFIX = "mypy-metastore:"
#: The note a run prints (with stats or -v) when it created the store's directory.
CREATED_PREFIX = "mypy-metastore: created directory "
#: Strings that must never appear on a drop-in run's stderr.
FORBIDDEN = ("Traceback (most recent call last)", "INTERNAL ERROR", "database is locked",
             "disk I/O error", "malformed")


class ParseError(AssertionError):
    """Output did not have the expected shape (an AssertionError so tests fail, not error)."""


def by_file(stdout: str) -> tuple[dict[str, list[str]], list[str]]:
    """mypy's report as ``{file: its lines in order}`` without only-once notes, and the
    remaining lines that name no file (the summary).

    Two reports with equal ``by_file`` differ at most in the two ways stock incremental mypy's
    output differs from ``--no-incremental``: the order in which files are reported (cached
    modules' errors are replayed as they are loaded, and ``-n`` reports files as its workers
    finish them: stock ``mypy -n 2`` on an empty cache dir printed the stress project's
    ``pkg1/broken.py`` before ``pkg0/loose.py`` in 11 of 12 runs, ``--no-incremental``
    never), and only-once notes (:func:`metastore.cli.bench.lines_by_file` lists them; its
    :func:`metastore.cli.bench.report` compares the same way for ``metastore bench``)."""
    return lines_by_file(stdout, lambda name: name.endswith((".py", ".pyi")) or name == "mypy.ini")


@dataclass(frozen=True)
class Verbose:
    """What ``mypy -v`` says about one build."""

    rechecked: int  # modules in SCCs scheduled as stale
    rechecked_modules: tuple[str, ...]
    sccs: tuple[tuple[str, ...], ...]  # the stale SCCs, in log order
    build_modules: int  # N of "Build finished in X seconds with N modules"

    @classmethod
    def parse(cls, stderr: str) -> Verbose:
        """Parse ``stderr`` of a ``-v`` run. Raises :class:`ParseError` unless there is exactly
        one ``Build finished`` line (a run without ``-v`` must never count as "0 re-checked"),
        or when an SCC line's size disagrees with its module list."""
        sccs: list[tuple[str, ...]] = []
        finished: list[int] = []
        for line in stderr.splitlines():
            if m := _SINGLETON.search(line):
                mods = tuple(m["mods"].split())
                if len(mods) != 1:
                    raise ParseError(f"singleton SCC with {len(mods)} modules: {line!r}")
                sccs.append(mods)
            elif m := _SIZED.search(line):
                mods = tuple(m["mods"].split())
                if len(mods) != int(m["size"]):
                    raise ParseError(f"SCC size {m['size']} but {len(mods)} modules: {line!r}")
                sccs.append(mods)
            elif m := _FINISHED.search(line):
                finished.append(int(m["modules"]))
        if len(finished) != 1:
            raise ParseError(
                f"expected one 'LOG:  Build finished' line, found {len(finished)}"
                " (was mypy run with -v?)"
            )
        mods_all = tuple(mod for scc in sccs for mod in scc)
        return cls(len(mods_all), mods_all, tuple(sccs), finished[0])


@dataclass(frozen=True)
class Stats:
    """The drop-in's stats line."""

    offered: int
    missed: int
    rechecked: int
    published: int
    meta_writes: int
    read_bytes: int
    written_bytes: int
    store_seconds: float
    store: str
    layer_hits: tuple[int, ...] = (0,)  # metas offered per layer: top, then each base
    ambiguous: int = 0  # selection (see metastore.mypy.selection)
    search_steps: int = 0
    mismatched: int = 0
    select_seconds: float = 0.0

    @classmethod
    def parse(cls, stderr: str) -> Stats:
        """The one stats line in ``stderr``. Raises :class:`ParseError` if there is none, more
        than one, or one that does not match the contract's format exactly."""
        lines = [ln for ln in stderr.splitlines() if ln.startswith(STATS_PREFIX)]
        if len(lines) != 1:
            raise ParseError(f"expected exactly one stats line, found {len(lines)}: {lines!r}")
        m = _STATS.match(lines[0])
        if m is None:
            raise ParseError(f"malformed stats line: {lines[0]!r}")
        ints = {k: int(v) for k, v in m.groupdict().items()
                if k not in ("store", "store_seconds", "layer_hits", "select_seconds")}
        hits = tuple(int(n) for n in m["layer_hits"].split(","))
        if sum(hits) != ints["offered"]:
            raise ParseError(f"layer_hits {hits} do not add up to offered: {lines[0]!r}")
        return cls(store_seconds=float(m["store_seconds"]), store=m["store"],
                   layer_hits=hits, select_seconds=float(m["select_seconds"]), **ints)


@dataclass(frozen=True)
class RunResult:
    """A finished process."""

    argv: tuple[str, ...]
    cwd: Path
    mypy_args: tuple[str, ...]  # the arguments under test (without harness-added flags)
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    kind: str  # "dropin", "stock" or "oracle"
    python: str

    @property
    def verbose(self) -> Verbose:
        return Verbose.parse(self.stderr)

    @property
    def stats(self) -> Stats:
        return Stats.parse(self.stderr)

    def stderr_messages(self) -> list[str]:
        """stderr lines that are not mypy's ``LOG:``/``TRACE:`` lines."""
        return [ln for ln in self.stderr.splitlines()
                if not ln.startswith(("LOG:", "TRACE:")) and ln.strip()]

    def describe(self) -> str:
        msgs = self.stderr_messages()
        tail = "\n".join(msgs[-20:])
        return (f"$ (cd {self.cwd} && {' '.join(self.argv)})\nexit {self.returncode} "
                f"in {self.seconds:.2f}s\n--- stdout ---\n{self.stdout[-3000:]}"
                f"--- stderr (non-LOG, last 20) ---\n{tail}")


def clean_env(tmp: Path, *, extra: Mapping[str, str] | None = None,
              pythonpath: str | None = None) -> dict[str, str]:
    """The environment for every process the tests start: the current one without any
    ``MYPY*`` variable or ``PYTHONPATH`` (unless ``pythonpath`` is given), with HOME and the
    XDG directories inside ``tmp`` (so the user's real store and mypy config are never used),
    no colour, no bytecode files in the trees."""
    # PYTHONUNBUFFERED goes too: unbuffered, print() writes a line in pieces, and the lines of
    # mypy's parallel workers (same stderr) get mixed into the coordinator's mid-line; line-
    # buffered, each line is one write() (atomic on a pipe up to PIPE_BUF bytes).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MYPY") and k not in ("PYTHONPATH", "PYTHONSTARTUP",
                                                     "PYTHONHOME", "VIRTUAL_ENV",
                                                     "PYTHONUNBUFFERED")}
    home = tmp / "home"
    for sub in ("", ".cache", ".config"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env.update({
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TERM": "dumb",
        "NO_COLOR": "1",
    })
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    if extra:
        env.update(extra)
    return env


class Pending:
    """A started process (see :meth:`Harness.start_dropin`); :meth:`wait` collects it."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str],
                 mypy_args: Sequence[str], kind: str, python: str,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.argv = tuple(argv)
        self.cwd = cwd
        self.mypy_args = tuple(mypy_args)
        self.kind = kind
        self.python = python
        self.timeout = timeout
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, start_new_session=True,
        )

    def wait(self) -> RunResult:
        """Wait for the process; on timeout kill its process group (it and mypy's workers)
        and fail the test."""
        remaining = max(1.0, self.timeout - (time.monotonic() - self.start))
        try:
            out, err = self.proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate()
            raise AssertionError(
                f"timed out after {self.timeout}s: {' '.join(self.argv)} in {self.cwd}\n"
                f"stdout: {out[-2000:]}\nstderr: {err[-4000:]}"
            ) from None
        return RunResult(self.argv, self.cwd, self.mypy_args, self.proc.returncode, out, err,
                         time.monotonic() - self.start, self.kind, self.python)


def tree_digest(root: Path) -> str:
    """Digest of every file's relative path and bytes under ``root`` (skipping
    ``__pycache__`` and ``.mypy_cache``): the key the oracle's results are memoised on."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in ("__pycache__", ".mypy_cache") for part in rel.parts) or not p.is_file():
            continue
        h.update(str(rel).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass
class Product:
    """How to run the product: an interpreter that can ``-m metastore.seams.dropin`` and the
    environment variables it needs (``PYTHONPATH`` when run from the source tree)."""

    python: str
    pythonpath: str | None = None
    description: str = ""


@dataclass
class Harness:
    """Runs processes for one test, everything under ``tmp``.

    ``store`` is the default top store (``tmp/store/store.db``); ``cache_dir`` the default
    ``--cache-dir`` of drop-in runs (persistent across the test's runs, like a user's
    ``.mypy_cache``); ``oracle_python`` runs stock mypy and the oracle.
    """

    tmp: Path
    product: Product
    oracle_python: str = sys.executable
    timeout: float = DEFAULT_TIMEOUT
    store: Path = field(init=False)
    cache_dir: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    _oracle_memo: dict[tuple[str, ...], RunResult] = field(init=False, default_factory=dict)
    _counter: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.store = self.tmp / "store" / "store.db"
        self.cache_dir = self.tmp / "mypy-cache" / "shared"
        self.env = clean_env(self.tmp)

    # ---- running ----------------------------------------------------------------------

    def fresh_cache_dir(self) -> Path:
        """A new, empty ``--cache-dir`` (so whatever is warm can only come from the store)."""
        self._counter += 1
        return self.tmp / "mypy-cache" / f"fresh-{self._counter}"

    def dropin_argv(self, args: Sequence[str], *, store: Path | None = None,
                    bases: Sequence[Path] = (), stats: bool = True, verbose: bool = True,
                    cache_dir: Path | None = None, python: str | None = None) -> list[str]:
        argv = [python or self.product.python, "-m", "metastore.seams.dropin",
                "--metastore-store", str(store if store is not None else self.store)]
        for b in bases:
            argv += ["--metastore-base", str(b)]
        if stats:
            argv.append("--metastore-stats")
        if verbose:
            argv.append("-v")
        argv.append(f"--cache-dir={cache_dir if cache_dir is not None else self.cache_dir}")
        return argv + list(args)

    def _product_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        out = dict(self.env)
        if self.product.pythonpath is not None:
            out["PYTHONPATH"] = self.product.pythonpath
        if VIA:
            out["MYPY_METASTORE_VIA"] = VIA
        if env:
            out.update(env)
        return out

    def start_dropin(self, cwd: Path, args: Sequence[str] = (), *, store: Path | None = None,
                     bases: Sequence[Path] = (), stats: bool = True, verbose: bool = True,
                     cache_dir: Path | None = None, python: str | None = None,
                     env: Mapping[str, str] | None = None) -> Pending:
        """Start ``python -m metastore.seams.dropin`` in ``cwd`` (see :meth:`dropin`)."""
        argv = self.dropin_argv(args, store=store, bases=bases, stats=stats, verbose=verbose,
                                cache_dir=cache_dir, python=python)
        return Pending(argv, cwd, self._product_env(env), args, "dropin",
                       python or self.product.python, self.timeout)

    def dropin(self, cwd: Path, args: Sequence[str] = (), *, store: Path | None = None,
               bases: Sequence[Path] = (), stats: bool = True, verbose: bool = True,
               cache_dir: Path | None = None, python: str | None = None,
               env: Mapping[str, str] | None = None) -> RunResult:
        """Run the drop-in with ``--metastore-store`` (default :attr:`store`),
        ``--metastore-base`` for each of ``bases``, ``--metastore-stats`` (unless
        ``stats=False``), ``-v`` (unless ``verbose=False``), ``--cache-dir`` (default
        :attr:`cache_dir`) and ``args``, with ``python`` (default: the product's)."""
        return self.start_dropin(cwd, args, store=store, bases=bases, stats=stats,
                                 verbose=verbose, cache_dir=cache_dir, python=python,
                                 env=env).wait()

    def stock(self, cwd: Path, args: Sequence[str] = (), *, cache_dir: Path,
              verbose: bool = True, python: str | None = None) -> RunResult:
        """Run stock incremental mypy (``python -m mypy``) with ``cache_dir``."""
        py = python or self.oracle_python
        argv = [py, "-m", "mypy", *(["-v"] if verbose else []), f"--cache-dir={cache_dir}",
                *args]
        return Pending(argv, cwd, self.env, args, "stock", py, self.timeout).wait()

    def oracle(self, cwd: Path, args: Sequence[str] = (), *,
               python: str | None = None) -> RunResult:
        """``mypy --no-incremental --cache-dir=/dev/null <args>`` in ``cwd``, memoised on
        (interpreter, cwd, args, the tree's content)."""
        py = python or self.oracle_python
        key = (py, str(cwd), *args, tree_digest(cwd))
        if key not in self._oracle_memo:
            argv = [py, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null", *args]
            self._oracle_memo[key] = Pending(argv, cwd, self.env, args, "oracle", py,
                                             self.timeout).wait()
        return self._oracle_memo[key]

    # ---- checking ---------------------------------------------------------------------

    def normalise(self, text: str) -> str:
        """Replace the test's temporary directory (both spellings) by ``<TMP>``."""
        for root in sorted({str(self.tmp), str(self.tmp.resolve())}, key=len, reverse=True):
            text = text.replace(root, "<TMP>")
        return text

    def assert_exact(self, run: RunResult, oracle: RunResult | None = None, *,
                     oracle_args: Sequence[str] | None = None,
                     oracle_python: str | None = None) -> RunResult:
        """Assert ``run``'s stdout (normalised) and exit status equal the oracle's on the same
        tree (``oracle`` if given, else run with ``oracle_args`` or ``run.mypy_args``).
        Returns the oracle's result."""
        if oracle is None:
            oracle = self.oracle(run.cwd, run.mypy_args if oracle_args is None else oracle_args,
                                 python=oracle_python)
        got, want = self.normalise(run.stdout), self.normalise(oracle.stdout)
        if got != want or run.returncode != oracle.returncode:
            diff = "\n".join(list(difflib.unified_diff(
                want.splitlines(), got.splitlines(), "oracle", run.kind, lineterm=""))[:60])
            raise AssertionError(
                f"output differs from the oracle (exit {run.returncode} vs oracle "
                f"{oracle.returncode})\n{diff}\n\n{run.describe()}"
            )
        return oracle

    def assert_clean(self, run: RunResult, *, stats: bool = True) -> None:
        """Assert ``run``'s stderr holds nothing forbidden (traceback, INTERNAL ERROR,
        "database is locked", …) and no ``mypy-metastore:`` line except the one stats line
        (when ``stats``) and at most one note that the store's directory was created."""
        for bad in FORBIDDEN:
            assert bad not in run.stderr, f"{bad!r} on stderr\n{run.describe()}"
        ours = [ln for ln in run.stderr.splitlines() if ln.startswith(MESSAGE_PREFIX)]
        created = [ln for ln in ours if ln.startswith(CREATED_PREFIX)]
        assert len(created) <= 1, f"the directory note more than once\n{run.describe()}"
        others = [ln for ln in ours
                  if not ln.startswith((STATS_PREFIX, CREATED_PREFIX, REMOTE_STATS_PREFIX))]
        assert not others, f"unexpected mypy-metastore messages: {others}\n{run.describe()}"
        if stats:
            Stats.parse(run.stderr)

    def check(self, run: RunResult, *, oracle_args: Sequence[str] | None = None,
              rechecked: int | None = None, warm: bool = False) -> tuple[Verbose, Stats]:
        """The standard checks on a drop-in run (``-v`` and stats on): clean stderr, output
        and exit status equal to the oracle's, the stats line names the store used and agrees
        with ``-v`` on the number of modules re-checked.
        ``rechecked``: the exact number of modules ``-v`` says were re-checked.
        ``warm``: a fully warm run: 0 re-checked, 0 trees loaded, stats offered > 0,
        missed == 0, rechecked == 0 and meta_writes == 0."""
        self.assert_clean(run)
        self.assert_exact(run, oracle_args=oracle_args)
        v, s = run.verbose, run.stats
        ctx = f"\nverbose: {v.rechecked} re-checked {v.rechecked_modules[:20]}\nstats: {s}"
        store_arg = run.argv[run.argv.index("--metastore-store") + 1]
        assert os.path.realpath(s.store) == os.path.realpath(run.cwd / store_arg), (
            f"stats line names store {s.store!r}, the run used {store_arg!r}{ctx}")
        assert s.rechecked == v.rechecked, f"stats and -v disagree on re-checked{ctx}"
        if rechecked is not None:
            assert v.rechecked == rechecked, f"expected {rechecked} re-checked{ctx}"
        if warm:
            assert v.rechecked == 0, f"warm run re-checked modules{ctx}"
            assert v.build_modules == 0, f"warm run loaded {v.build_modules} trees{ctx}"
            assert s.offered > 0, f"warm run but the store offered nothing{ctx}"
            assert s.missed == 0, f"warm run but the store missed{ctx}"
            assert s.rechecked == 0, f"warm run but stats say re-checked{ctx}"
            assert s.meta_writes == 0, f"warm run but mypy wrote metas{ctx}"
        return v, s


def snapshot_lines(log: Path) -> list[tuple[str, int, int, int]]:
    """Per run that found a run snapshot (the developer log): which slot it came from
    ("here" or "portable"), its records, how many were compared by content, how many
    units were offered from it."""
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        match = re.search(r" snapshot \((\w+)\): (\d+) records, (\d+) compared by content, "
                          r"(\d+) offered", line)
        if match:
            kind, records, compared, offered = match.groups()
            found.append((kind, int(records), int(compared), int(offered)))
    return found
