"""The kinds of slot this layer writes (an opaque label to the store, which groups its
statistics by it and evicts slots by last use with the entries), and which slots are dead:
ones that can never be used again because what they name is gone from the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from metastore.mypy import run_snapshot, snapshot_delta
from metastore.mypy.units import SNAPSHOT_POINTER

#: A run snapshot (see metastore.mypy.run_snapshot), one per checkout and set of options.
RUN_SNAPSHOT = "run-snapshot"
#: A delta on a checkout's run snapshot (see metastore.mypy.snapshot_delta).
RUN_SNAPSHOT_DELTA = "run-snapshot-delta"
#: A snapshot derived from another checkout's (roots and signatures only).
DERIVED_SNAPSHOT = "derived-snapshot"
#: The portable slot: names the snapshot slot last written by any checkout.
SNAPSHOT_POINTER_KIND = "snapshot-pointer"
#: A source file's stat signature and content key (metastore.mypy.source_files).
SOURCE_MEMO = "source-memo"
#: The last unit published for a module from one file (choosing._offer_previous).
PREVIOUS_UNIT = "previous-unit"
#: Which snapshot slot a command's data blobs are checked ahead from, per directory of
#: this machine it ran in (metastore.mypy.checked_ahead): keyed by store and argv.
AHEAD_HINT = "ahead-hint"
#: mypy's own global entries (fine-grained dependencies), kept as they were written.
MYPY_GLOBAL = "mypy-global"

#: One plain line per kind, for ``metastore stats`` (its legend and ``--help``).
LEGEND: dict[str, str] = {
    RUN_SNAPSHOT: "one checkout's last run: each module's unit and file stat (warm runs)",
    RUN_SNAPSHOT_DELTA: "a later run's changes to a run snapshot (small edits)",
    DERIVED_SNAPSHOT: "a run snapshot for a new path, made from another checkout's",
    SNAPSHOT_POINTER_KIND: "names the last run snapshot of these options and files, any path",
    SOURCE_MEMO: "a file's stat and content hash: unchanged files are not re-hashed (local)",
    PREVIOUS_UNIT: "the unit last stored for a module of a file, preferred among fits",
    AHEAD_HINT: "the run snapshot the helper checks ahead of mypy, per command (local)",
    MYPY_GLOBAL: "mypy's own global entries (fine-grained dependencies, for dmypy)",
}

#: Kinds that hold facts about this machine's files (a memo is keyed by absolute path and
#: holds the file's inode and ctime): another machine can never use them, so a remote tier
#: is neither given them nor asked for them.
LOCAL_KINDS = frozenset({SOURCE_MEMO, AHEAD_HINT})


def dead(kind: str, data: bytes, has_slot: Callable[[bytes], bool],
         has_entry: Callable[[bytes], bool], has_blobs: Callable[[Sequence[bytes]], bool],
         ) -> bool:
    """True if a slot of ``kind`` holding ``data`` can never serve again: a pointer, a
    delta or a derived snapshot whose snapshot is gone, a previous unit whose entry is gone, a run
    snapshot some of whose units' data blobs are gone (those records are chosen anew, never
    served), an undecodable snapshot. Memos and mypy's entries are never known dead."""
    if kind == SNAPSHOT_POINTER_KIND:
        return not (data.startswith(SNAPSHOT_POINTER)
                    and has_slot(data[len(SNAPSHOT_POINTER):]))
    if kind == DERIVED_SNAPSHOT:
        derived = run_snapshot.decode_derived(data)
        return derived is None or not has_slot(derived.base_key)
    if kind == RUN_SNAPSHOT_DELTA:
        delta = snapshot_delta.decode(data)
        return delta is None or not has_slot(delta.base_key)
    if kind == PREVIOUS_UNIT:
        return len(data) != 64 or not has_entry(data[:32])
    if kind == RUN_SNAPSHOT:
        snapshot = run_snapshot.decode(data)
        if snapshot is None:
            return True
        return not has_blobs(sorted(bytes.fromhex(d) for d in snapshot.data_texts()))
    return False
