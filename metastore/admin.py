"""The admin CLI: ``metastore [--store PATH] {stats,config}`` (also ``python -m metastore``).

Exit status 0 on success. Every error (bad usage, bad configuration, unreadable or foreign
store) prints ONE line ``metastore: <message>`` on stderr and exits with status 2; never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from metastore import __version__
from metastore.config import Config, ConfigError, Setting, describe, load_config

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


def _pairs(mapping: Mapping[str, int]) -> str:
    if not mapping:
        return "-"
    return "  ".join(f"{k}={v:,}" for k, v in sorted(mapping.items()))


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
            ("on disk", _human_bytes(int(layer.get("file_bytes", 0)))),
            ("labels", _pairs(layer.get("labels") or {})),
            ("counters", _pairs(layer.get("counters") or {})),
        ]
        lines.append(f"{layer.get('role', '?')!s:<5} {layer.get('path', '?')}")
        lines.extend(f"  {name:<15} {value}" for name, value in rows)
        if i != len(layers) - 1:
            lines.append("")
    if not layers and missing_top is None:
        lines.append("(no layers)")
    return "\n".join(lines).rstrip("\n")


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

    from metastore.store import Store, StoreError

    try:
        store = Store(top, bases)
        try:
            layers = [layer._asdict() for layer in store.stats()]
        finally:
            store.close()
    except StoreError as e:
        raise _Fail(str(e)) from None

    if args.json:
        out: dict[str, Any] = {"layers": layers}
        if missing_top is not None:
            out["missing_top"] = missing_top
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(format_stats(layers, missing_top))


def cmd_config(args: argparse.Namespace) -> None:
    config = effective_config(args.store)
    rows = describe(config)
    if args.json:
        out = {key: {"value": getattr(config, key).value, "source": src} for key, _, src in rows}
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
    from metastore import bench

    mypy_args = list(args.mypy_args)
    if mypy_args[:1] == ["--"]:
        mypy_args = mypy_args[1:]
    tty = sys.stderr.isatty()

    def progress(message: str) -> None:
        if tty:
            sys.stderr.write(f"\r\x1b[K{PROG} bench: {message}")
            sys.stderr.flush()

    import platform

    from metastore.compat import mypy_version

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
    p_stats = sub.add_parser("stats", help="per-layer statistics of the store")
    p_stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_stats.set_defaults(func=cmd_stats)
    p_config = sub.add_parser("config", help="effective settings and where each came from")
    p_config.add_argument("--json", action="store_true", help="print JSON")
    p_config.set_defaults(func=cmd_config)
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
