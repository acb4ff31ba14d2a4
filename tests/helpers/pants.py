"""A faithful model of how Pants runs mypy, for tests and benchmarks (Pants itself cannot run
here). Source: pantsbuild/pants ``src/python/pants/backend/python/typecheck/mypy/rules.py``
(``__mypy_runner.sh``, ``_generate_argv``/``_get_cache_args``) and
``../shared/design/prior-art.md``.

Per run of a *partition* (one resolve, one Python version, a list of root files):

- a fresh temporary **sandbox** holding the partition's first-party sources under the source
  root ``src/python``, the mypy config file ``mypy.ini``, the file list ``__files.txt``, the
  requirements-venv shim ``requirements_venv.pex_bin_python_shim.sh`` and ``__mypy_runner.sh``;
- ``.cache/mypy_cache``: a symlink to the one shared **named cache** directory (Pants'
  ``append_only_caches={"mypy_cache": ...}``); every sandbox of every partition sees the same;
- the **requirements venv** of the partition's resolve lives outside the sandbox at a path
  that differs per resolve and Python version (Pants keeps it in ``pex_root/venvs/<hash>``);
  mypy reaches it through ``--python-executable=<shim>``;
- the runner script's steps: ``mkdir -p`` + ``cp`` of
  ``.cache/mypy_cache/<sha256(buildroot)>/<resolve>/<X.Y>/cache.db`` into
  ``.tmp_cache/mypy_cache/<X.Y>/cache.db``; mypy with Pants' argv (below); if mypy exited 0
  or 1, hard-link (or copy) the sandbox database to a temporary name in the named cache and
  rename it over ``cache.db`` (last writer wins); exit with mypy's status;
- mypy's argv, in Pants' order: ``<console script> --python-executable=<shim> <[mypy].args>
  --config-file=mypy.ini --python-version=X.Y --skip-cache-mtime-check --sqlite-cache
  --cache-dir .tmp_cache/mypy_cache [--sqlite-num-shards=1 on mypy >= 2.0] @__files.txt``;
- the environment: only ``PATH``, ``PEX_EXTRA_SYS_PATH`` and ``MYPYPATH`` (the source roots),
  ``MYPY_FORCE_COLOR=1``, ``TERM=ansi``, ``MYPY_FORCE_TERMINAL_WIDTH=642092230765939``. No
  ``HOME``, no ``MYPY_METASTORE*``: whatever the drop-in needs comes from ``[mypy].args``
  or the config file.

``mode="stock"`` runs the tool venv's ``mypy`` console script (Pants' default);
``mode="store"`` runs ``mypy-metastore`` (``[mypy].console_script = "mypy-metastore"``) with
``--metastore-store=.cache/mypy_cache/metastore.db`` in ``[mypy].args``; the runner script
is the same in both modes.

The *oracle* of a run is ``mypy --no-incremental --cache-dir=/dev/null`` with the same other
arguments, environment and tree, in a sandbox of its own.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from helpers import gen, venvs
from helpers.run import Pending, RunResult, Stats, tree_digest

SOURCE_ROOT = "src/python"
FILE_LIST = "__files.txt"
RUNNER = "__mypy_runner.sh"
SHIM = "requirements_venv.pex_bin_python_shim.sh"
CONFIG = "mypy.ini"
RUN_CACHE_DIR = ".tmp_cache/mypy_cache"
NAMED_CACHE_LINK = ".cache/mypy_cache"
STORE_ARG = f"--metastore-store={NAMED_CACHE_LINK}/metastore.db"
PANTS_ENV = {
    "MYPY_FORCE_COLOR": "1",
    "TERM": "ansi",
    "MYPY_FORCE_TERMINAL_WIDTH": "642092230765939",
}
MODES = ("stock", "store")


def thirdparty_files(resolve: str) -> gen.Files:
    """``thirdparty_pkg`` as locked in ``resolve``: "a" is version 1.0
    (:func:`gen.thirdparty_files`), "b" is 2.0, whose ``Circle.area`` and ``util.scale``
    return ``str``, so the same first-party code has other errors under each resolve."""
    files = gen.thirdparty_files()
    if resolve == "a":
        return files
    p = gen.THIRDPARTY_PACKAGE
    files[f"{p}/__init__.py"] = files[f"{p}/__init__.py"].replace('"1.0"', '"2.0"')
    files[f"{p}/shapes.py"] = (
        "class Shape:\n    def area(self) -> str:\n        return ''\n\n\n"
        "class Circle(Shape):\n    def __init__(self, r: float) -> None:\n"
        "        self.r = r\n\n    def area(self) -> str:\n"
        "        return f'{3.14159 * self.r * self.r}'\n"
    )
    files[f"{p}/util.py"] = files[f"{p}/util.py"].replace(
        "def scale(x: float, k: int) -> float:\n    return x * k",
        "def scale(x: float, k: int) -> str:\n    return str(x * k)")
    return files


def find_interpreters() -> dict[str, str]:
    """``{"3.X": interpreter}`` for the CPython 3.10+ interpreters on this machine
    (``/usr/bin``, ``PATH``, pyenv), the running one included."""
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}": sys.executable}
    pyenv = Path(os.path.expanduser("~/.pyenv/versions"))
    for minor in range(10, 15):
        ver = f"3.{minor}"
        if ver in found:
            continue
        candidates = [Path(f"/usr/bin/python{ver}")]
        if pyenv.is_dir():
            candidates += sorted(pyenv.glob(f"{ver}.*/bin/python{ver}"), reverse=True)
        which = shutil.which(f"python{ver}")
        if which and "/shims/" not in which:  # a pyenv shim may name no real interpreter
            candidates.append(Path(which))
        for c in candidates:
            if c.is_file() and os.access(c, os.X_OK):
                found[ver] = str(c)
                break
    return found


@dataclass(frozen=True)
class Tool:
    """The mypy tool venv a partition's mypy runs in (Pants' ``mypy.pex``)."""

    python: str
    mypy_version: tuple[int, int]
    python_version: str  # "3.X" of ``python``

    def script(self, mode: str) -> str:
        """The console script Pants runs: ``mypy`` or ``mypy-metastore``."""
        name = "mypy" if mode == "stock" else "mypy-metastore"
        path = Path(self.python).parent / name
        if not path.is_file():
            raise FileNotFoundError(f"no console script {path} (is the product installed?)")
        return str(path)


def tool_for(python: str) -> Tool:
    code = "import sys, mypy.version; print(mypy.version.__version__, *sys.version_info[:2])"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("MYPY")})
    version, py_major, py_minor = out.stdout.split()
    major, minor = version.split(".")[:2]
    return Tool(python, (int(major), int(minor)), f"{py_major}.{py_minor}")


@dataclass(frozen=True)
class Partition:
    """One mypy process of ``pants check``: a resolve, a Python version, root files
    (paths under the source root; empty = every module of the project)."""

    name: str
    resolve: str
    python_version: str
    roots: tuple[str, ...] = ()


@dataclass
class PantsRun:
    """A finished partition run."""

    partition: Partition
    mode: str
    result: RunResult
    sandbox: Path
    oracle: RunResult
    stats: Stats | None = None

    @property
    def rechecked(self) -> tuple[str, ...]:
        return self.result.verbose.rechecked_modules


@dataclass
class PantsWorld:
    """A build root, Pants' named caches (one set per mode), requirements venvs, tools."""

    root: Path
    tools: Mapping[str, Tool]  # python version -> tool venv
    interpreters: Mapping[str, str]  # python version -> interpreter for requirements venvs
    spec: gen.ProjectSpec = field(default_factory=lambda: gen.ProjectSpec(thirdparty=True))
    timeout: float = 300.0
    buildroot: Path = field(init=False)
    _req_venvs: dict[tuple[str, str], Path] = field(init=False, default_factory=dict)
    _oracle_memo: dict[tuple[str, ...], RunResult] = field(init=False, default_factory=dict)
    _files: gen.Files = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.buildroot = self.root / "buildroot"
        (self.root / "sandboxes").mkdir(parents=True, exist_ok=True)

    # ---- layout -------------------------------------------------------------------------

    def named_caches(self, mode: str) -> Path:
        """Pants' named-caches directory (``~/.cache/pants/named_caches``), one per mode so
        the two schemes never see each other's files."""
        return self.root / f"named_caches-{mode}"

    def mypy_named_cache(self, mode: str) -> Path:
        return self.named_caches(mode) / "mypy_cache"

    def store_path(self) -> Path:
        """The store the drop-in uses (the real path behind the sandbox's symlink)."""
        return self.mypy_named_cache("store").resolve() / "metastore.db"

    def cache_db(self, partition: Partition) -> str:
        """Where Pants keeps the partition's mypy database inside the named cache:
        ``<sha256 of the build root>/<resolve>/<X.Y>/cache.db``."""
        digest = hashlib.sha256(str(self.buildroot).encode()).hexdigest()
        return f"{digest}/{partition.resolve}/{partition.python_version}/cache.db"

    def requirements_python(self, resolve: str, version: str) -> Path:
        """The resolve's requirements venv for ``version`` (built once, at a path that differs
        per resolve and version, outside every sandbox)."""
        key = (resolve, version)
        if key not in self._req_venvs:
            venv = self.root / "pex_root" / "venvs" / f"{resolve}-py{version}"
            if not venv.exists():
                py = venvs.make_bare_venv(venv, base_python=self.interpreters[version])
                venvs.install_files(py, thirdparty_files(resolve))
            self._req_venvs[key] = venvs.python_in(venv)
        return self._req_venvs[key]

    # ---- sources --------------------------------------------------------------------------

    def write_sources(self, files: Mapping[str, str]) -> None:
        """Set the build root's first-party sources to ``files`` (a generated project)."""
        project = {k: v for k, v in files.items() if k != gen.CONFIG}
        gen.write_tree(self.buildroot / SOURCE_ROOT, project)
        self._files = dict(project)

    def _roots(self, partition: Partition) -> list[str]:
        roots = partition.roots or tuple(sorted(p for p in self._files if p.endswith(".py")))
        return [f"{SOURCE_ROOT}/{r}" for r in roots]

    # ---- sandboxes -----------------------------------------------------------------------

    def make_sandbox(self, partition: Partition, *, named_cache: Path | None,
                     config: str = "[mypy]\nwarn_unused_ignores = True\n") -> Path:
        """A fresh sandbox for ``partition``: sources (fresh mtimes, as Pants materialises
        them), config, file list, shim, and ``.cache/mypy_cache`` -> ``named_cache``."""
        box = Path(tempfile.mkdtemp(prefix=f"pants-{partition.name}-",
                                    dir=self.root / "sandboxes"))
        for rel in self._files:
            src = self.buildroot / SOURCE_ROOT / rel
            dst = box / SOURCE_ROOT / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)  # new mtime: Pants does not keep mtimes
        (box / CONFIG).write_text(config)
        (box / FILE_LIST).write_text("\n".join(self._roots(partition)))
        req = self.requirements_python(partition.resolve, partition.python_version)
        shim = box / SHIM
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(str(req))} "$@"\n')
        shim.chmod(0o755)
        if named_cache is not None:
            (box / ".cache").mkdir()
            os.symlink(named_cache, box / NAMED_CACHE_LINK)
        return box

    def env(self) -> dict[str, str]:
        """The environment Pants gives the mypy process (nothing from the user's)."""
        return {"PATH": "/usr/bin:/bin", "PEX_EXTRA_SYS_PATH": SOURCE_ROOT,
                "MYPYPATH": SOURCE_ROOT, **PANTS_ENV}

    def mypy_argv(self, partition: Partition, script: str, args: Sequence[str],
                  tool: Tool) -> list[str]:
        """Pants' argv for mypy (see the module docstring); ``args`` is ``[mypy].args``."""
        argv = [script, f"--python-executable=./{SHIM}", *args, f"--config-file={CONFIG}",
                f"--python-version={partition.python_version}",
                "--skip-cache-mtime-check", "--sqlite-cache", "--cache-dir", RUN_CACHE_DIR]
        if tool.mypy_version >= (2, 0):
            argv.append("--sqlite-num-shards=1")
        return [*argv, f"@{FILE_LIST}"]

    def runner_script(self, partition: Partition, argv: Sequence[str]) -> str:
        """``__mypy_runner.sh``: copy-in, mypy, copy-back (hard link or copy to a temporary
        name, then rename) when mypy exited 0 or 1."""
        rel_named = f"{NAMED_CACHE_LINK}/{self.cache_db(partition)}"
        named_dir = os.path.dirname(rel_named)
        run_dir = f"{RUN_CACHE_DIR}/{partition.python_version}"
        q = shlex.quote
        tools = {name: shutil.which(name) or f"/bin/{name}" for name in ("mkdir", "cp", "ln",
                                                                         "mv")}
        return "\n".join([
            "#!/bin/bash",
            f"{tools['mkdir']} -p {q(run_dir)} > /dev/null 2>&1 || true",
            f"{tools['cp']} {q(rel_named)} {q(run_dir)}/cache.db > /dev/null 2>&1 || true",
            " ".join(q(a) for a in argv),
            "EXIT_CODE=$?",
            'if [ "$EXIT_CODE" -le 1 ]; then',
            f"  {tools['mkdir']} -p {q(named_dir)} > /dev/null 2>&1 || true",
            f'  TMP={q(named_dir)}/cache.db.tmp.$$',
            f'  {{ {tools["ln"]} {q(run_dir)}/cache.db "$TMP" || '
            f'{tools["cp"]} {q(run_dir)}/cache.db "$TMP"; }} > /dev/null 2>&1 && '
            f'{tools["mv"]} "$TMP" {q(rel_named)} > /dev/null 2>&1 || true',
            "fi",
            'exit "$EXIT_CODE"',
            "",
        ])

    # ---- running -------------------------------------------------------------------------

    def mode_args(self, mode: str, extra: Sequence[str] = ()) -> list[str]:
        """``[mypy].args`` for ``mode``: ``-v`` (to count re-checked modules), and for the
        store ``--metastore-store=.cache/mypy_cache/metastore.db --metastore-stats``."""
        args = ["-v", *extra]
        if mode == "store":
            args = [STORE_ARG, "--metastore-stats", *args]
        return args

    def start(self, partition: Partition, mode: str, *, args: Sequence[str] | None = None,
              named_cache: Path | None = None, config: str | None = None,
              ) -> tuple[Pending, Path]:
        """Start ``partition`` in a fresh sandbox through the runner script (``args``:
        ``[mypy].args``, default :meth:`mode_args`; ``named_cache``: the symlink's target,
        default the mode's, created; ``config``: the text of ``mypy.ini``)."""
        tool = self.tools[partition.python_version]
        if args is None:
            args = self.mode_args(mode)
        cache = self.mypy_named_cache(mode) if named_cache is None else named_cache
        if named_cache is None:
            cache.mkdir(parents=True, exist_ok=True)  # Pants creates the named cache
        box = (self.make_sandbox(partition, named_cache=cache) if config is None
               else self.make_sandbox(partition, named_cache=cache, config=config))
        argv = self.mypy_argv(partition, tool.script(mode), args, tool)
        runner = box / RUNNER
        runner.write_text(self.runner_script(partition, argv))
        runner.chmod(0o755)
        pending = Pending([f"./{RUNNER}"], box, self.env(), args, mode, tool.python,
                          self.timeout)
        return pending, box

    def oracle(self, partition: Partition) -> RunResult:
        """``mypy --no-incremental`` on ``partition`` (memoised on the sources and resolve)."""
        key = (partition.resolve, partition.python_version, *partition.roots,
               tree_digest(self.buildroot))
        if key not in self._oracle_memo:
            tool = self.tools[partition.python_version]
            box = self.make_sandbox(partition, named_cache=None)
            argv = [tool.python, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null",
                    f"--python-executable=./{SHIM}", f"--config-file={CONFIG}",
                    f"--python-version={partition.python_version}", f"@{FILE_LIST}"]
            result = Pending(argv, box, self.env(), (), "oracle", tool.python,
                             self.timeout).wait()
            shutil.rmtree(box)
            self._oracle_memo[key] = result
        return self._oracle_memo[key]

    def run_concurrently(self, partitions: Sequence[Partition], mode: str,
                         ) -> tuple[list[PantsRun], float]:
        """Run ``partitions`` at once (as ``pants check`` does); return the runs, each with its
        oracle and (store mode) stats, and the wall time from first start to last exit."""
        oracles = [self.oracle(p) for p in partitions]
        t0 = time.monotonic()
        started = [self.start(p, mode) for p in partitions]
        results = [pending.wait() for pending, _ in started]
        wall = time.monotonic() - t0
        runs = []
        for p, (_, box), result, oracle in zip(partitions, started, results, oracles):
            stats = Stats.parse(result.stderr) if mode == "store" else None
            runs.append(PantsRun(p, mode, result, box, oracle, stats))
            shutil.rmtree(box, ignore_errors=True)  # Pants removes its sandboxes
        return runs, wall


FORBIDDEN = ("Traceback (most recent call last)", "INTERNAL ERROR", "database is locked",
             "disk I/O error", "malformed")


def problems(run: PantsRun, world: PantsWorld) -> list[str]:
    """What is wrong with ``run``: output or exit status unlike the oracle's, forbidden text on
    stderr, unexpected ``mypy-metastore:`` lines, a stats line naming another store."""
    out: list[str] = []
    r, o = run.result, run.oracle
    if r.stdout.replace(str(run.sandbox), "<SANDBOX>") != o.stdout.replace(
            str(o.cwd), "<SANDBOX>") or r.returncode != o.returncode:
        out.append(f"{run.partition.name} ({run.mode}): output differs from the oracle: exit "
                   f"{r.returncode} vs {o.returncode}\n--- got\n{r.stdout[-2000:]}\n--- want\n"
                   f"{o.stdout[-2000:]}\n--- stderr\n{_messages(r.stderr)}")
    for bad in FORBIDDEN:
        if bad in r.stderr:
            out.append(f"{run.partition.name} ({run.mode}): {bad!r} on stderr:\n"
                       f"{_messages(r.stderr)}")
    ours = [ln for ln in r.stderr.splitlines()
            if ln.startswith("mypy-metastore:") and not ln.startswith("mypy-metastore: offered=")]
    if ours:
        out.append(f"{run.partition.name} ({run.mode}): unexpected messages {ours}")
    if run.stats is not None and run.stats.store != str(world.store_path()):
        out.append(f"{run.partition.name}: stats name store {run.stats.store}, expected "
                   f"{world.store_path()}")
    return out


def _messages(stderr: str) -> str:
    return "\n".join(ln for ln in stderr.splitlines()
                     if ln.strip() and not ln.startswith(("LOG:", "TRACE:")))[-3000:]


# ---- campaigns: rounds of concurrent partitions, with edits between rounds -------------------

#: Round names in order; each names the tree checked in that round (see :func:`tree_for`).
ROUNDS = ("cold", "no edit", "leaf edit", "core edit", "revert")


def tree_for(round_name: str, spec: gen.ProjectSpec) -> gen.Files:
    """The first-party sources of a round: the generated project, its leaf module edited
    (imported by nothing), then also its core module's interface edited (imported by nearly
    everything), then back to the original."""
    base = gen.generate(spec)
    if round_name == "leaf edit":
        return gen.edit_leaf(base, spec, 1)
    if round_name == "core edit":
        return gen.edit_core(gen.edit_leaf(base, spec, 1), 1)
    return base


def default_partitions(versions: Sequence[str]) -> list[Partition]:
    """Every resolve ("a", "b") with every Python version, all over the whole project (so
    they share their first-party code), as ``pants check ::`` partitions them."""
    return [Partition(f"{resolve}-py{ver}", resolve, ver)
            for ver in versions for resolve in ("a", "b")]


@dataclass
class Round:
    """One round of one mode: every partition run at once."""

    name: str
    mode: str
    wall: float
    runs: list[PantsRun]


def run_campaign(world: PantsWorld, partitions: Sequence[Partition],
                 rounds: Sequence[str] = ROUNDS, modes: Sequence[str] = MODES,
                 progress: bool = False) -> list[Round]:
    """For each round: write its tree into the build root, then run every partition at once
    in each mode in turn (stock first, so the two see the same machine load)."""
    out: list[Round] = []
    for name in rounds:
        world.write_sources(tree_for(name, world.spec))
        for mode in modes:
            runs, wall = world.run_concurrently(partitions, mode)
            out.append(Round(name, mode, wall, runs))
            if progress:
                print(f"  {name:<10} {mode:<5} {wall:6.2f}s  re-checked "
                      f"{[len(r.rechecked) for r in runs]}", file=sys.stderr, flush=True)
    return out


def leaf_module(spec: gen.ProjectSpec) -> str:
    return gen.module_name(gen.leaf_path(spec))


def campaign_problems(world: PantsWorld, rounds: Sequence[Round]) -> list[str]:
    """Everything wrong with a campaign:

    - any run's output or exit status differs from its oracle, or its stderr is not clean
      (:func:`problems`);
    - with the store, a round on a tree every partition has already checked ("no edit",
      "revert") re-checks anything (which would be thrash between partitions);
    - with the store, a partition re-checks a module that stock mypy, incremental on that
      partition's own warm database, did not re-check in the same round, or after the leaf
      edit anything but the leaf.
    """
    out: list[str] = []
    stock = {(r.name, run.partition.name): set(run.rechecked)
             for r in rounds if r.mode == "stock" and r.name != "cold" for run in r.runs}
    for r in rounds:
        for run in r.runs:
            out += [f"round {r.name!r}: {p}" for p in problems(run, world)]
            if r.mode != "store" or r.name == "cold":
                continue
            got = set(run.rechecked)
            where = f"round {r.name!r}, {run.partition.name} (store)"
            if r.name in ("no edit", "revert") and got:
                out.append(f"{where}: re-checked {sorted(got)} on an already checked tree")
            if r.name == "leaf edit" and not got <= {leaf_module(world.spec)}:
                out.append(f"{where}: re-checked {sorted(got)} after the leaf edit")
            ref = stock.get((r.name, run.partition.name))
            if ref is not None and not got <= ref:
                out.append(f"{where}: re-checked {sorted(got - ref)} that stock mypy did not")
    return out


def report(rounds: Sequence[Round]) -> list[str]:
    """A table: per round and mode, the wall time and the modules each partition re-checked,
    then the totals and the store/stock time ratio."""
    lines = []
    if rounds:
        names = [run.partition.name for run in rounds[0].runs]
        lines.append(f"{'round':<10} {'mode':<5} {'wall s':>7}  re-checked per partition "
                     f"({', '.join(names)})")
    totals: dict[str, float] = {}
    for r in rounds:
        totals[r.mode] = totals.get(r.mode, 0.0) + r.wall
        counts = " ".join(f"{len(run.rechecked):>4}" for run in r.runs)
        lines.append(f"{r.name:<10} {r.mode:<5} {r.wall:7.2f}  {counts}")
    for mode, total in totals.items():
        lines.append(f"total wall {mode}: {total:.2f} s")
    if totals.get("stock"):
        lines.append(f"ratio store/stock (wall, all rounds): "
                     f"{totals.get('store', 0.0) / totals['stock']:.2f}")
        warm = [r for r in rounds if r.name != "cold"]
        ws = sum(r.wall for r in warm if r.mode == "stock")
        wo = sum(r.wall for r in warm if r.mode == "store")
        if ws:
            lines.append(f"ratio store/stock (wall, rounds after the first): {wo / ws:.2f}")
    return lines
