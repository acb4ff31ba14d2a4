"""P8: a 10,000-module generated project, warm, through a store that grows to 1,000,000 entries.

A benchmark program (not a test). Steps, all in ``<workdir>/p8``:

1. Generate a project of ``--modules`` modules (deterministic in ``--modules`` and
   ``--seed``; kept between runs): package ``proj`` with subpackages of 100 modules, each
   module importing one to three earlier ones, defining a constant, a class (a third of
   them subclass a dependency's class) and a function; every 500th module holds a
   deliberate type error, so the report is not empty.
2. ``mypy --no-incremental`` once: the oracle every later output is compared with.
3. A cold run of each side: stock mypy on an empty ``--cache-dir``, the store on a new
   store file (one run each, printed for information).
4. For each size of ``--entries`` (ascending): pad the store up to that many entries,
   then measure it (and at the first size, ``--edits`` runs of P5: one module edited):

   - warm runs, stock and store interleaved (``--runs`` pairs), medians and their ratio,
     modules re-checked (``-v``), every output compared with the oracle;
   - the seconds the store itself took in those runs (``--metastore-stats``);
   - the store API alone: :meth:`metastore.store.local.Store.lookup` of the project's own unit
     keys in batches of ``--batch`` (the mypy layer looks keys up per level of an import
     closure), of as many absent keys, and ``get_slots`` of its source-memo slots - time
     per key, best of ``--lookup-runs`` passes.

Padding goes through :meth:`metastore.store.local.Store.put` (the store layer knows nothing of
mypy). It copies the shape of the project's real entries: per entry a label (the
project's namespace or another mypy/Python version's), a 32-byte key, a manifest value of
a real entry's size and form whose blob digests name its own blobs, three refs (a meta blob
of its own, a data blob, a meta_ex blob shared as real ones are) and one source-memo slot.
Data blobs of real sizes come from a pool of ``--data-pool`` blobs (real stores share data
blobs between identical module versions, though less): entries, keys, slots and the blob
index grow to full scale, blob bytes less (the table shows the file size).

    python benchmarks/p8_large.py [--modules 10000] [--entries 10000,100000,1000000]
        [--runs 5] [--batch 100] [--lookup-runs 3] [--edits 5] [--data-pool 100000]
        [--keep-store]
        [--workdir DIR]

Columns: store entries, file size (with the WAL), median warm wall time of each side,
their ratio, modules the store re-checked, exact (every output equal to the oracle's),
median seconds spent in the store per warm run, then the API timings per key and the
seconds the padding took.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import Any

import apsw
from metastore.cli.bench import Report, fresh, report
from metastore.store.api import digest
from metastore.store.local import Store

PACKAGE = "proj"
PER_PACKAGE = 100
ERROR_EVERY = 500
SCHED = re.compile(r"LOG:  Scheduling SCC (?:singleton|of size (\d+)) \(")
STORE_SECONDS = re.compile(r"^mypy-metastore: .* store_seconds=([0-9.]+)", re.M)
#: Namespaces of padding entries besides the project's own: other mypy and Python versions.
OTHER_LABELS = ("mypy 2.4.0 ff py3.11 no plugins", "mypy 2.4.1 ff py3.12 no plugins",
                "mypy 2.3.1 ff py3.11 no plugins", "mypy 2.4.1 json py3.11 no plugins")
PUT_BATCH = 5000


# --------------------------------------------------------------------------- the project


def module_path(index: int) -> str:
    """Path (relative to the project) of module ``index``."""
    return f"{PACKAGE}/p{index // PER_PACKAGE:03d}/m{index % PER_PACKAGE:03d}.py"


def _suffix(index: int) -> str:
    return f"{index // PER_PACKAGE}_{index % PER_PACKAGE}"


def _dotted(index: int) -> str:
    return module_path(index)[:-3].replace("/", ".")


def module_text(index: int, deps: Sequence[int], subclass: int | None) -> str:
    """Source of module ``index`` importing the modules ``deps`` (all < index)."""
    me = _suffix(index)
    lines = [f'"""Generated module {_dotted(index)}."""']
    lines += [f"import {_dotted(d)}" for d in deps]
    if subclass is not None:
        lines.append(f"from {_dotted(subclass)} import C_{_suffix(subclass)}")
    lines += ["", f"CONST_{me}: int = {index % 997}", "", ""]
    lines.append(f"class C_{me}({'C_' + _suffix(subclass) if subclass is not None else ''}):")
    lines += [f'    """Class of module {index}."""', "",
              f"    def method_{me}(self, x: int) -> int:",
              f"        total = x + CONST_{me}"]
    lines += [f"        total += {_dotted(d)}.f_{_suffix(d)}(x)" for d in deps]
    lines += ["        return total", "", "", f"def f_{me}(x: int) -> int:",
              f"    return x * 2 + CONST_{me}"]
    if index % ERROR_EVERY == ERROR_EVERY - 1:
        lines += ["", "", f"bad_{me}: str = f_{me}(1)"]
    return "\n".join(lines) + "\n"


def generate(modules: int, seed: int = 0) -> dict[str, str]:
    """The project's files ``{relative path: text}`` (deterministic in its arguments)."""
    if modules < 2:
        raise ValueError("--modules must be at least 2")
    rng = random.Random(seed)
    files = {f"{PACKAGE}/__init__.py": '"""Generated project for P8."""\n'}
    for p in range((modules + PER_PACKAGE - 1) // PER_PACKAGE):
        files[f"{PACKAGE}/p{p:03d}/__init__.py"] = f'"""Package {p}."""\n'
    for i in range(modules):
        deps = sorted(rng.sample(range(i), min(i, rng.randint(1, 3))))
        subclass = deps[0] if deps and rng.random() < 1 / 3 else None
        files[module_path(i)] = module_text(i, deps, subclass)
    return files


def write_project(root: str, modules: int, seed: int) -> str:
    """The generated project at ``root`` (regenerated unless its marker says it is there)."""
    marker = os.path.join(root, ".p8-generated")
    want = f"{modules} {seed}\n"
    if os.path.exists(marker) and open(marker).read() == want:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for rel, text in generate(modules, seed).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(marker, "w") as f:
        f.write(want)
    return root


# --------------------------------------------------------------------------- runs


class Run:
    def __init__(self, seconds: float, stdout: str, returncode: int, stderr: str) -> None:
        self.seconds = seconds
        self.report = report(stdout, returncode)
        self.rechecked = sum(int(m.group(1) or 1) for m in SCHED.finditer(stderr))
        self.failed = returncode not in (0, 1)
        self.stderr_tail = stderr.strip().splitlines()[-1:]
        found = STORE_SECONDS.search(stderr)
        self.store_seconds = float(found.group(1)) if found else float("nan")


def run(cmd: Sequence[str], cwd: str, env: dict[str, str]) -> Run:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        rc = subprocess.run(list(cmd), cwd=cwd, env=env, stdout=out, stderr=err).returncode
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return Run(seconds, out.read().decode(errors="replace"), rc,
                   err.read().decode(errors="replace"))


# --------------------------------------------------------------------------- padding


class Template:
    """One real entry: its label, value and the sizes of its blobs."""

    def __init__(self, label: str, value: bytes, meta: int, data: int, ex: bytes) -> None:
        self.label = label
        self.value = value
        self.meta_size = meta
        self.data_size = data
        self.ex = ex  # the meta_ex blob's digest (shared by the padding, as in real stores)


def query(path: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the store file, read-only (for the benchmark's own bookkeeping)."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def templates(path: str) -> list[Template]:
    """The store's entries (the project's) as templates for padding."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        sizes: dict[bytes, int] = {bytes(d): int(n) for d, n in conn.execute(
            "SELECT digest, size FROM blobs")}
        out = []
        for label, value, refs in conn.execute("SELECT label, value, refs FROM entries"):
            try:
                manifest = json.loads(value)
                meta, data, ex = (bytes.fromhex(manifest[k]) for k in ("m", "d", "x"))
            except (ValueError, KeyError, TypeError):
                continue
            if meta in sizes and data in sizes and ex in sizes:
                out.append(Template(label, bytes(value), sizes[meta], sizes[data], ex))
        return out
    finally:
        conn.close()


def entry_count(path: str) -> int:
    return int(query(path, "SELECT count(*) FROM entries")[0][0])


def pad(store: Store, have: int, target: int, pool: list[bytes], models: list[Template],
        rng: random.Random, progress: bool) -> float:
    """Put entries (with blobs and slots) into ``store``, which holds ``have`` entries,
    until it holds ``target``; return the seconds it took."""
    t0 = time.perf_counter()
    own_label = models[0].label
    labels = [own_label, own_label, *OTHER_LABELS]
    while have < target:
        n = min(PUT_BATCH, target - have)
        entries, blobs, slots = [], [], []
        for _ in range(n):
            model = rng.choice(models)
            meta = rng.randbytes(model.meta_size)
            meta_digest = digest(meta)
            data_digest = pool[rng.randrange(len(pool))]
            manifest = json.loads(model.value)
            manifest.update(m=meta_digest.hex(), d=data_digest.hex(),
                            h=rng.randbytes(20).hex())
            value = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
            entries.append((rng.choice(labels), rng.randbytes(32), value,
                            [meta_digest, data_digest, model.ex]))
            blobs.append(meta)
            slots.append((rng.randbytes(32), time.time(), rng.randbytes(64)))
        store.put(entries=entries, blobs=blobs, slots=slots)
        have += n
        if progress:
            sys.stderr.write(f"\r  padding: {have:,} entries")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\r\x1b[K")
    return time.perf_counter() - t0


def make_pool(store: Store, size: int, models: list[Template], rng: random.Random) -> list[bytes]:
    """``size`` data blobs of the models' data sizes, put into the store; their digests."""
    pool: list[bytes] = []
    while len(pool) < size:
        batch = [rng.randbytes(rng.choice(models).data_size)
                 for _ in range(min(PUT_BATCH, size - len(pool)))]
        store.put(blobs=batch)
        pool.extend(digest(b) for b in batch)
    return pool


# --------------------------------------------------------------------------- lookups


def chunks(items: Sequence[bytes], n: int) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def one_edit(edits: int, tree: str, module: str, count: int, want: Report,
             stock: tuple[list[str], dict[str, str]], ours: tuple[list[str], dict[str, str]]
             ) -> None:
    """P5 at this scale: ``edits`` times, a comment appended to ``module`` (its interface
    and every message stay the same), then a run of each side, alternating which runs
    first; the file is restored and both sides run once more, so later runs are warm."""
    path = os.path.join(tree, module)
    with open(path) as f:
        original = f.read()
    times: tuple[list[float], list[float]] = ([], [])
    exact = True
    try:
        for i in range(edits):
            with open(path, "w") as f:
                f.write(original + f"\n# p8_large edit {i}\n")
            sides = [(stock, times[0]), (ours, times[1])]
            for (cmd, env), out in sides if i % 2 == 0 else reversed(sides):
                r = run(cmd, tree, env)
                exact = exact and r.report == want
                out.append(r.seconds)
    finally:
        with open(path, "w") as f:
            f.write(original)
    for cmd, env in (stock, ours):
        run(cmd, tree, env)
    t_stock, t_store = statistics.median(times[0]), statistics.median(times[1])
    print(f"P5 one edit ({module}, {edits} runs a side) at {count:,} entries: stock "
          f"{t_stock:.3f} s, store {t_store:.3f} s, ratio {t_store / t_stock:.2f}; exact: "
          f"{'yes' if exact else 'NO'}", flush=True)


def per_key_us(call: Callable[[Sequence[bytes]], object], keys: Sequence[bytes], batch: int,
               passes: int) -> float:
    """Best of ``passes`` passes over ``keys`` in batches: microseconds per key."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for chunk in chunks(keys, batch):
            call(chunk)
        best = min(best, time.perf_counter() - t0)
    return best / len(keys) * 1e6


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", type=int, default=10_000)
    ap.add_argument("--entries", default="10000,100000,1000000",
                    help="store sizes to measure at, comma-separated (ascending)")
    ap.add_argument("--runs", type=int, default=5, help="warm runs per side and size")
    ap.add_argument("--batch", type=int, default=100, help="keys per lookup call")
    ap.add_argument("--lookup-runs", type=int, default=3)
    ap.add_argument("--edits", type=int, default=5,
                    help="P5 runs per side at the first size (0: none)")
    ap.add_argument("--data-pool", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-store", action="store_true",
                    help="keep the store and caches (a 1M-entry store takes some GiB)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "metastore-bench"))
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.entries.split(",") if s.strip())
    tty = sys.stderr.isatty()
    work = os.path.join(os.path.abspath(args.workdir), "p8")
    os.makedirs(work, exist_ok=True)
    tree = write_project(os.path.join(work, f"project-{args.modules}-{args.seed}"),
                         args.modules, args.seed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY_METASTORE")}
    env.pop("PYTHONUNBUFFERED", None)
    stock_env = dict(env, MYPY_METASTORE="0")
    stock_cache = fresh(os.path.join(work, "stock-cache"))
    store_cache = fresh(os.path.join(work, "store-cache"))
    store_path = fresh(os.path.join(work, "store.db"))
    stock = [sys.executable, "-m", "mypy", "--cache-dir", stock_cache, "-v", PACKAGE]
    ours = [sys.executable, "-m", "metastore.seams.dropin", "--metastore-store", store_path,
            "--metastore-stats", "--cache-dir", store_cache, "-v", PACKAGE]
    version = subprocess.run([sys.executable, "-m", "mypy", "--version"], capture_output=True,
                             text=True).stdout.strip()
    print(f"P8: {args.modules:,} generated modules; {version}; {os.cpu_count()} cores; "
          f"{args.runs} interleaved warm runs per side and store size", flush=True)

    oracle = run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir",
                  os.devnull, PACKAGE], tree, stock_env)
    if oracle.failed:
        sys.exit(f"p8_large: mypy fails on the generated project: {oracle.stderr_tail}")
    want: Report = oracle.report
    cold_stock = run(stock, tree, stock_env)
    cold_store = run(ours, tree, env)
    exact = cold_stock.report == want and cold_store.report == want
    print(f"oracle (--no-incremental) {oracle.seconds:.1f} s; cold: stock "
          f"{cold_stock.seconds:.1f} s, store {cold_store.seconds:.1f} s, ratio "
          f"{cold_store.seconds / cold_stock.seconds:.2f}; re-checked {cold_stock.rechecked} / "
          f"{cold_store.rechecked}; exact: {'yes' if exact else 'NO'}", flush=True)

    models = templates(store_path)
    rng = random.Random(args.seed)
    keys = [bytes(k) for (k,) in query(store_path, "SELECT key FROM entries")]
    slot_keys = [bytes(k) for (k,) in query(store_path, "SELECT key FROM slots")]
    absent = [rng.randbytes(32) for _ in keys]
    rng.shuffle(keys)
    print(f"the project's units: {len(keys):,} entries, {len(slot_keys):,} source-memo slots; "
          f"lookups in batches of {args.batch}", flush=True)
    head = ("   entries      file  stock s  store s  ratio store re exact in store hit us/key "
            "miss us/key slot us/key  pad s")
    rows = []
    pool: list[bytes] = []
    smallest = os.path.join(work, "store-smallest.db")  # the store at the first size
    for size in sizes:
        padded = 0.0
        count = entry_count(store_path)
        if count < size:
            with closing(Store(store_path)) as store:
                if not pool:
                    pool = make_pool(store, args.data_pool, models, rng)
                padded = pad(store, count, size, pool, models, rng, tty)
            count = entry_count(store_path)
        file_bytes = sum(os.path.getsize(store_path + suffix) for suffix in ("", "-wal")
                         if os.path.exists(store_path + suffix))
        stock_runs, store_runs = [], []
        for _ in range(args.runs):
            stock_runs.append(run(stock, tree, stock_env))
            store_runs.append(run(ours, tree, env))
        ok = all(r.report == want for r in stock_runs + store_runs)
        with closing(Store(store_path)) as store:
            hit = per_key_us(store.lookup, keys, args.batch, args.lookup_runs)
            miss = per_key_us(store.lookup, absent, args.batch, args.lookup_runs)
            slot = per_key_us(store.get_slots, slot_keys, args.batch, args.lookup_runs)
        t_stock = statistics.median(r.seconds for r in stock_runs)
        t_store = statistics.median(r.seconds for r in store_runs)
        in_store = statistics.median(r.store_seconds for r in store_runs)
        rows.append((count, t_stock, t_store, hit, miss, slot, in_store))
        if len(rows) == 1:
            print(head)
        rechecked = statistics.median(r.rechecked for r in store_runs)
        print(f"{count:>10,} {file_bytes / 2**20:>7.0f}Mi {t_stock:8.3f} {t_store:8.3f} "
              f"{t_store / t_stock:6.2f} {rechecked:8.0f} {'yes' if ok else 'NO':>5} "
              f"{in_store:7.3f}s {hit:10.1f} {miss:11.1f} {slot:11.1f} {padded:6.0f}",
              flush=True)
        if len(rows) == 1 and args.edits:
            one_edit(args.edits, tree, module_path(args.modules // 2), count, want,
                     (stock, stock_env), (ours, env))
        if len(rows) == 1 and len(sizes) > 1:
            shutil.copyfile(store_path, smallest)  # closed: checkpointed, one file
    first, last = rows[0], rows[-1]
    if len(rows) > 1:
        # The per-size figures above are measured minutes apart on a machine whose speed
        # drifts; this one alternates the two stores, each pass in a new Store (a new
        # process's page cache, as in a run), and compares the medians.
        per_path: dict[str, list[float]] = {smallest: [], store_path: []}
        for _ in range(max(5, args.lookup_runs)):
            for path, times in per_path.items():
                with closing(Store(path)) as store:
                    times.append(per_key_us(store.lookup, keys, args.batch, 1))
        small, large = (statistics.median(per_path[p]) for p in (smallest, store_path))
        print(f"lookup per key (hit), passes alternating between the store at {first[0]:,} "
              f"and at {last[0]:,} entries, each in a new Store: {small:.1f} -> {large:.1f} us "
              f"({large / small:.2f}x)")
        fresh(smallest)
    print(f"P8 warm ratio store/stock: {first[2] / first[1]:.2f} at {first[0]:,} entries, "
          f"{last[2] / last[1]:.2f} at {last[0]:,}; lookup per key (hit) {first[3]:.1f} -> "
          f"{last[3]:.1f} us ({last[3] / first[3]:.2f}x), miss {last[4] / first[4]:.2f}x, "
          f"slots {last[5] / first[5]:.2f}x; time in the store per module in a warm run "
          f"{first[6] / len(keys) * 1e6:.0f} -> {last[6] / len(keys) * 1e6:.0f} us")
    if not args.keep_store:
        for path in (store_path, store_cache, stock_cache):
            fresh(path)


if __name__ == "__main__":
    main()
