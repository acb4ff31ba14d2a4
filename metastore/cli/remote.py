"""``metastore push`` and ``metastore pull``: the whole top to / from the configured remote.

A run already pushes what it writes and pulls what it misses; these are for filling a new
remote from an existing store, or an L1 before going offline."""

from __future__ import annotations

import argparse
from typing import Any

from metastore.cli.admin import Progress, _Fail, effective_config


def _tiered(args: argparse.Namespace) -> Any:
    from metastore.seams.backend import open_backend
    from metastore.store.api import StoreError
    from metastore.store.tiered import TieredStore

    config = effective_config(args.store)
    if not config.remote.value:
        raise _Fail("no remote configured (the remote setting, MYPY_METASTORE_REMOTE)")
    problems: list[str] = []
    try:
        backend = open_backend(config, problems.append, local_options=False)
    except StoreError as e:
        raise _Fail(str(e)) from None
    if not isinstance(backend, TieredStore):
        backend.close()
        raise _Fail(problems[0] if problems else "the remote cannot be used")
    backend.read_only = False
    backend._report = problems.append  # failures end the command with one line
    return backend, problems


def cmd_push(args: argparse.Namespace) -> None:
    from metastore.store.sync import push_all

    store, problems = _tiered(args)
    progress = Progress("pushed", "entries")
    try:
        entries, slots = push_all(store, progress)
    except RuntimeError as e:
        raise _Fail(problems[0] if problems else str(e)) from None
    finally:
        progress.done()
        store.close()
    print(f"pushed {entries} entries and {slots} slots to {store.url} "
          f"({store.remote_stats.bytes_written} bytes)")


def cmd_pull(args: argparse.Namespace) -> None:
    from metastore.store.sync import pull_all

    store, problems = _tiered(args)
    try:
        keys, slots = pull_all(store)
    except RuntimeError as e:
        raise _Fail(problems[0] if problems else str(e)) from None
    finally:
        store.close()
    rejected = f"; {len(problems)} problems: {problems[0]}" if problems else ""
    print(f"pulled {keys} entry keys and {slots} slots from {store.url} "
          f"({store.remote_stats.bytes_read} bytes){rejected}")


def add_parsers(sub: Any) -> None:
    p_push = sub.add_parser("push", help="write every entry and slot of the top to the "
                            "configured remote")
    p_push.set_defaults(func=cmd_push)
    p_pull = sub.add_parser("pull", help="copy everything the configured remote holds into "
                            "the top, checked (Redis remotes)")
    p_pull.set_defaults(func=cmd_pull)
