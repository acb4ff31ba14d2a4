"""The admin CLI: ``metastore [--store PATH] COMMAND`` (also ``python -m metastore``).

Commands: ``stats``, ``config``, ``export``, ``merge``, ``gc``, ``verify``.  Exit status 0 on
success; ``verify`` exits with 1 when it finds problems it did not repair.  Every error (bad
usage, bad configuration, unreadable or foreign store) prints ONE line ``metastore:
<message>`` on stderr and exits with status 2; never a traceback.  Long commands show
progress (counts and bytes) on stderr when it is a terminal, nothing otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn

from metastore import __version__
from metastore.config import (
    Config,
    ConfigError,
    Setting,
    describe,
    load_config,
    parse_size,
    split_base,
)

if TYPE_CHECKING:
    from metastore.store.api import Base
    from metastore.store.local import Store

__all__ = ["main"]

PROG = "metastore"
STORE_OPTION_SOURCE = "option --store"


class _Fail(Exception):
    """An error to report as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Fail(f"{message} (see '{PROG} --help')")


# --------------------------------------------------------------------------- helpers


def effective_config(store: str | None, *, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration seen from the current directory, with ``--store`` applied.

    Raises ConfigError.
    """
    config = load_config(environ=environ)
    if store is not None:
        if not store.strip():
            raise ConfigError("option --store needs a non-empty path")
        path = os.path.abspath(os.path.expanduser(store))
        config = config._replace(store=Setting(path, STORE_OPTION_SOURCE))
    return config


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Progress:
    """``(count, bytes)`` callback that redraws one status line on a terminal (at most ten
    times a second) and prints nothing when *stream* is not a terminal."""

    def __init__(self, what: str, unit: str, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.what = what
        self.unit = unit
        self._last = 0.0
        self._width = 0

    def __call__(self, count: int, nbytes: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.1:
            return
        self._last = now
        text = f"{self.what}: {count:,} {self.unit}, {_human_bytes(nbytes)}"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _pairs(mapping: Mapping[str, int]) -> str:
    if not mapping:
        return "-"
    return "  ".join(f"{k}={v:,}" for k, v in sorted(mapping.items()))


def _slot_kinds(kinds: Mapping[str, Any]) -> str:
    """Slots by kind: count and bytes, and - where the kind's liveness is known (see
    :mod:`metastore.mypy.slot_kinds`) - how many of those bytes are dead."""
    if not kinds:
        return "-"
    parts = []
    for kind, value in sorted(kinds.items()):
        count, nbytes = int(value[0]), int(value[1])
        dead = f", {_human_bytes(int(value[2]))} dead" if len(value) > 2 else ""
        parts.append(f"{kind or '(unlabelled)'}={count:,} ({_human_bytes(nbytes)}{dead})")
    return "  ".join(parts)


def format_stats(layers: Sequence[Mapping[str, Any]], missing_top: str | None = None) -> str:
    """A readable table of per-layer statistics (one block per layer)."""
    lines: list[str] = []
    if missing_top is not None:
        lines.append(f"top   {missing_top}  (not created yet: the first store write creates it)")
        lines.append("")
    for i, layer in enumerate(layers):
        rows = [
            ("schema version", str(layer.get("schema_version", "?"))),
            ("entries", f"{layer.get('entries', 0):,}"),
            (
                "blobs",
                f"{layer.get('blobs', 0):,}  ({_human_bytes(int(layer.get('blob_bytes', 0)))})",
            ),
            ("on disk", _human_bytes(int(layer.get("file_bytes", 0)))
             + (f"  (live {_human_bytes(int(layer.get('live_bytes', 0)))}, "
                f"{layer.get('orphan_blobs', 0):,} evicted blobs awaiting deletion)"
                if layer.get("role") == "top" else "")),
            ("labels", _pairs(layer.get("labels") or {})),
            ("slots", _slot_kinds(layer.get("slot_kinds") or {})),
            ("counters", _pairs(layer.get("counters") or {})),
        ]
        immutable = "  (immutable)" if layer.get("immutable") else ""
        lines.append(f"{layer.get('role', '?')!s:<5} {layer.get('path', '?')}{immutable}")
        lines.extend(f"  {name:<15} {value}" for name, value in rows)
        if i != len(layers) - 1:
            lines.append("")
    if not layers and missing_top is None:
        lines.append("(no layers)")
    kinds = sorted({kind for layer in layers for kind in layer.get("slot_kinds") or {}})
    legend = slot_legend(kinds)
    if legend:
        lines += ["", "slot kinds:", legend]
    return "\n".join(lines).rstrip("\n")


def slot_legend(kinds: Sequence[str]) -> str:
    """One line per slot kind of ``kinds`` that has a description (see
    :data:`metastore.mypy.slot_kinds.LEGEND`)."""
    from metastore.mypy.slot_kinds import LEGEND

    return "\n".join(f"  {kind:<19} {LEGEND[kind]}" for kind in kinds if kind in LEGEND)


# --------------------------------------------------------------------------- commands


def cmd_stats(args: argparse.Namespace) -> None:
    config = effective_config(args.store)
    top: str | None = config.store.value
    bases = config.bases.value
    missing_top: str | None = None
    assert top is not None
    if not os.path.exists(top):
        if not bases:
            raise _Fail(
                f"{top}: no store there yet (the first mypy-metastore run creates it); "
                f"store comes from: {config.store.source}"
            )
        missing_top, top = top, None

    from metastore.store.api import StoreError
    from metastore.store.local import Store

    try:
        store = Store(top, _bases(config))
        try:
            if args.zero:
                if store.top is None:
                    raise _Fail(f"{missing_top}: no store there yet; nothing to zero")
                store.top.zero_counters()
            layers = [layer._asdict() for layer in store.stats()]
            for layer, stats in zip(store.layers, layers):
                stats["slot_kinds"] = _slots_with_dead(store, layer)
        finally:
            store.close()
    except StoreError as e:
        raise _Fail(str(e)) from None
    if args.zero:
        print(f"zeroed the counters of {top}")
        return

    if args.json:
        out: dict[str, Any] = {"layers": layers}
        if missing_top is not None:
            out["missing_top"] = missing_top
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(format_stats(layers, missing_top))


def _slots_with_dead(store: Any, layer: Any) -> dict[str, list[int]]:
    """{kind: [slots, bytes, dead bytes]} of one layer (reads every slot; a slot is dead
    when what it names is gone from every layer, see metastore.mypy.slot_kinds)."""
    from metastore.mypy.slot_kinds import dead
    from metastore.store import slots as slot_rows

    kinds: dict[str, list[int]] = {}
    for kind, key, _, data in slot_rows.iterate(layer):
        row = kinds.setdefault(kind, [0, 0, 0])
        row[0] += 1
        row[1] += len(data)
        if dead(kind, data, lambda k: store.get_slot(k) is not None,
                lambda k: bool(store.lookup([k])[k]),
                lambda ds: len(store.have_blobs(ds)) == len(set(ds))):
            row[2] += len(data)
    return kinds


def _bases(config: Config) -> list[Base]:
    from metastore.store.api import Base

    return [Base(*split_base(spec)) for spec in config.bases.value]


def _open(args: argparse.Namespace, *, top: bool = True, create: bool = False,
          with_bases: bool = True) -> tuple[Store, Config]:
    """The configured store (top, with bases unless not *with_bases*)."""
    from metastore.store.api import StoreError
    from metastore.store.local import Store

    config = effective_config(args.store)
    path = config.store.value
    if top and not create and not os.path.exists(path):
        raise _Fail(f"{path}: no store there yet (the first mypy-metastore run creates it); "
                    f"store comes from: {config.store.source}")
    bases = _bases(config) if with_bases else []
    try:
        return Store(path if top else None, bases), config
    except StoreError as e:
        raise _Fail(str(e)) from None


def _since(text: str) -> int:
    """Unix time from DAYS (a number: that many days ago) or an ISO date/time (UTC)."""
    try:
        return int(time.time() - float(text) * 86400)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _Fail(f"--since {text!r}: expected a number of days or a date such as "
                    "2025-01-31") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def _days(text: str, option: str, unit: str = "days") -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value >= 0:
        raise _Fail(f"{option} {text!r}: expected a number of {unit} (0 or more)")
    return value


def cmd_export(args: argparse.Namespace) -> None:
    from metastore.cli.maintenance import export
    from metastore.store.api import StoreError

    store, _ = _open(args, top=os.path.exists(effective_config(args.store).store.value)
                     or not effective_config(args.store).bases.value)
    progress = Progress("export", "blobs")
    try:
        result = export(store, args.out, labels=args.namespace or (),
                        since=None if args.since is None else _since(args.since),
                        progress=progress)
    except StoreError as e:
        raise _Fail(str(e)) from None
    finally:
        progress.done()
        store.close()
    skipped = f"; {result.skipped} entries left out (blobs missing)" if result.skipped else ""
    print(f"exported {result.entries:,} entries, {result.blobs:,} blobs "
          f"({_human_bytes(result.blob_bytes)}) to {os.path.abspath(args.out)} "
          f"({_human_bytes(result.file_bytes)}){skipped}")


def cmd_merge(args: argparse.Namespace) -> None:
    from metastore.cli.maintenance import merge
    from metastore.store.api import StoreError
    from metastore.store.local import Store

    dest = args.into if args.into is not None else effective_config(args.store).store.value
    for src in args.sources:
        if not os.path.isfile(src):
            raise _Fail(f"{os.path.abspath(src)}: source store does not exist; check the path")
    progress = Progress("merge", "entries")
    try:
        store = Store(os.path.abspath(dest))
        try:
            result = merge(store, args.sources, progress=progress)
        finally:
            progress.done()
            store.close()
    except StoreError as e:
        raise _Fail(str(e)) from None
    skipped = f"; {result.skipped} skipped (blobs missing)" if result.skipped else ""
    print(f"merged {len(args.sources)} store(s) into {os.path.abspath(dest)}: "
          f"{result.entries:,} new entries of {result.seen:,}, "
          f"{_human_bytes(result.blob_bytes)} of new blobs{skipped}")


def cmd_gc(args: argparse.Namespace) -> None:
    from metastore.cli.maintenance import gc
    from metastore.store.api import ORPHAN_GRACE_S, StoreError

    store, config = _open(args, with_bases=False)
    try:
        max_size = (parse_size(args.max_size, "--max-size") if args.max_size is not None
                    else None if args.older_than is not None else config.max_size.value)
    except ConfigError as e:
        store.close()
        raise _Fail(str(e)) from None
    if max_size == 0 and args.max_size is None:
        max_size = None  # max_size = 0 in the configuration means "no cap"
    older = None if args.older_than is None else _days(args.older_than, "--max-age") * 86400
    grace = ORPHAN_GRACE_S if args.grace is None else _days(args.grace, "--grace", "seconds")
    progress = Progress("gc", "entries evicted")
    try:
        result = gc(store, max_size=max_size, older_than_s=older, grace_s=grace,
                    progress=progress)
    except StoreError as e:
        raise _Fail(str(e)) from None
    finally:
        progress.done()
        store.close()
    cap = "no cap" if max_size is None else f"cap {_human_bytes(max_size)}"
    print(f"gc {config.store.value}: evicted {result.entries:,} entries and "
          f"{result.slots:,} slots, deleted "
          f"{result.blobs:,} blobs ({_human_bytes(result.blob_bytes)}); live size "
          f"{_human_bytes(result.live_bytes)} ({cap}), file {_human_bytes(result.file_bytes)}")


def cmd_verify(args: argparse.Namespace) -> None:
    from metastore.cli.maintenance import verify
    from metastore.store.api import StoreError

    config = effective_config(args.store)
    store, _ = _open(args, top=os.path.exists(config.store.value) or not config.bases.value)
    progress = Progress("verify", "blobs")
    try:
        reports = verify(store, repair=args.repair, progress=progress)
    except StoreError as e:
        raise _Fail(str(e)) from None
    finally:
        progress.done()
        store.close()
    bad = False
    for r in reports:
        summary = f"{r.entries:,} entries, {r.blobs:,} blobs ({_human_bytes(r.blob_bytes)})"
        if r.problems:
            bad = True
            fix = ("run 'metastore verify --repair'" if r.role == "top"
                   else "a base is never repaired: re-export or re-download it")
            print(f"BROKEN {r.role} {r.path}: {'; '.join(r.problems)}; {fix}")
        elif r.repaired:
            print(f"repaired {r.role} {r.path}: {'; '.join(r.repaired)}; now {summary}")
        else:
            print(f"ok {r.role} {r.path}: {summary}")
        for w in r.warnings:
            print(f"warning {r.role} {r.path}: {w}")
    sys.stdout.flush()
    if bad:
        sys.exit(1)


def cmd_config(args: argparse.Namespace) -> None:
    config = effective_config(args.store)
    rows = describe(config)
    if args.json:
        out = {key: {"value": getattr(config, key).value, "source": src} for key, _, src in rows}
        for key, shown, _ in rows:
            if key in ("remote", "remote_key"):  # credentials are never printed
                out[key]["value"] = shown
        out["config_file"] = {"value": config.config_file, "source": "mypy's config search"}
        print(json.dumps(out, indent=2, sort_keys=True))
        return
    for key, shown, source in rows:
        print(f"{key} = {shown}  ({source})")
    found = config.config_file or "none (no [tool.metastore] / [metastore] section found)"
    print(f"# config file: {found}")
    print("# `enabled` applies to plain mypy; mypy-metastore uses the store unless")
    print("# --metastore-off or MYPY_METASTORE=0")


# --------------------------------------------------------------------------- main


def cmd_bench(args: argparse.Namespace) -> None:
    from metastore.cli import bench

    mypy_args = list(args.mypy_args)
    if mypy_args[:1] == ["--"]:
        mypy_args = mypy_args[1:]
    tty = sys.stderr.isatty()

    def progress(message: str) -> None:
        if tty:
            sys.stderr.write(f"\r\x1b[K{PROG} bench: {message}")
            sys.stderr.flush()

    import platform

    from metastore.mypy.compat import mypy_version

    header = (f"{os.path.basename(os.getcwd())}: mypy {mypy_version()}, Python "
              f"{platform.python_version()}, {os.cpu_count()} cores, {args.runs} interleaved "
              f"runs per scenario; mypy args: {' '.join(mypy_args or ['.'])}")
    try:
        results = bench.run_bench(os.getcwd(), mypy_args or ["."], runs=args.runs,
                                  concurrency=args.concurrency, progress=progress)
    except bench.BenchError as e:
        raise _Fail(str(e)) from e
    finally:
        if tty:
            sys.stderr.write("\r\x1b[K")
    print(bench.as_json(results, header) if args.json else bench.format_table(results, header))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Administer the mypy-metastore store.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--store",
        metavar="PATH",
        help="the store (top layer) to act on; default: the configured one "
        "(see `metastore config`)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from metastore.mypy.slot_kinds import LEGEND

    p_stats = sub.add_parser("stats", help="per-layer statistics of the store",
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             epilog="slot kinds (the `slots` row):\n"
                             + slot_legend(sorted(LEGEND)))
    p_stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_stats.add_argument("--zero", action="store_true",
                         help="reset the top's persistent counters (hits, misses, ...)")
    p_stats.set_defaults(func=cmd_stats)
    p_export = sub.add_parser(
        "export", help="write a compact read-only copy of the store (every layer) to OUT, "
        "e.g. to publish as a CI artifact and use as a base")
    p_export.add_argument("out", metavar="OUT")
    p_export.add_argument("--namespace", action="append", metavar="LABEL",
                          help="only entries of this namespace label (as in `metastore "
                          "stats`; repeatable)")
    p_export.add_argument("--since", metavar="DAYS|DATE",
                          help="only entries created or used in the last DAYS days, or since "
                          "DATE (ISO, UTC)")
    p_export.set_defaults(func=cmd_export)
    p_merge = sub.add_parser("merge", help="copy what the store lacks from other stores "
                             "(append-only; safe while others use it)")
    p_merge.add_argument("sources", nargs="+", metavar="SRC")
    p_merge.add_argument("--into", metavar="DST",
                         help="the store to merge into (default: the configured store)")
    p_merge.set_defaults(func=cmd_merge)
    p_gc = sub.add_parser("gc", help="evict least recently used entries and slots from the top")
    p_gc.add_argument("--max-size", metavar="SIZE",
                      help="evict until the live size is at most SIZE (e.g. 2G, 500M; "
                      "default: the max_size setting)")
    p_gc.add_argument("--max-age", "--older-than", metavar="DAYS", dest="older_than",
                      help="evict entries and slots not used for DAYS days")
    p_gc.add_argument("--grace", metavar="SECONDS",
                      help="delete blobs of evicted entries only SECONDS after eviction "
                      "(default 3600, so runs in progress keep them; 0 only when no run "
                      "is going on)")
    p_gc.set_defaults(func=cmd_gc)
    p_verify = sub.add_parser("verify", help="check schema, blob digests, references and "
                              "layer health; exit status 1 if something is broken")
    p_verify.add_argument("--repair", action="store_true",
                          help="remove from the top what is broken (bad blobs and the "
                          "entries that need missing or bad blobs)")
    p_verify.set_defaults(func=cmd_verify)
    p_config = sub.add_parser("config", help="effective settings and where each came from")
    p_config.add_argument("--json", action="store_true", help="print JSON")
    p_config.set_defaults(func=cmd_config)
    from metastore.cli.remote import add_parsers

    add_parsers(sub)
    p_bench = sub.add_parser(
        "bench", help="time stock mypy against the store on this project (temporary copies)",
        description="Run P1 cold, P2 warm, P3 copy, P5 one edit and P7 concurrent runs with "
        "stock mypy and with the store, interleaved, in temporary copies of the current "
        "directory; print medians, ratios, re-checked modules, bytes and peak RSS. "
        "Arguments after -- go to mypy (default: '.').")
    p_bench.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    p_bench.add_argument("--concurrency", type=int, default=4,
                         help="processes at once in P7 (default 4)")
    p_bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_bench.add_argument("mypy_args", nargs=argparse.REMAINDER, metavar="-- MYPY_ARGS")
    p_bench.set_defaults(func=cmd_bench)
    return parser


def _fail(message: str) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.write(f"{PROG}: {' '.join(message.split())}\n")
    sys.stderr.flush()
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``metastore``; ``argv`` defaults to ``sys.argv[1:]``.

    Returns on success (exit status 0); exits with status 2 after one line on stderr on
    any error.
    """
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
        sys.stdout.flush()
    except _Fail as e:
        _fail(str(e))
    except ConfigError as e:
        _fail(str(e))
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            # As mypy does: silence the flush at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(2)
        _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as e:  # never a traceback
        _fail(f"internal error: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
