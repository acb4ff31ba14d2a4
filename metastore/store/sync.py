"""Whole-store transfers between the local top and a remote tier (``metastore push`` and
``metastore pull``). Knows nothing of mypy.

``push`` pages through every entry of the top (with the blobs it needs) and every slot, and
writes them to the remote in batches. ``pull`` copies what the remote holds into the top,
checked as the tiered store checks everything (digests, tags); it needs a remote that can
list its keys (Redis: ``SCAN``), which the HTTP layout cannot.
"""

from __future__ import annotations

from collections.abc import Callable

from metastore.store.layer import Layer
from metastore.store.sqlite import _refs_of
from metastore.store.tiered import TieredStore

BATCH = 500


def push_all(store: TieredStore, progress: Callable[[int, int], None] | None = None
             ) -> tuple[int, int]:
    """Push every entry and slot of the top (but slots of the store's local kinds); (entries,
    slots) pushed. Raises RuntimeError (one line) if the remote failed."""
    top: Layer | None = store.top
    if top is None:
        return 0, 0
    seq = 0
    pushed = 0
    while True:
        after = seq

        def page() -> list[tuple[int, str, bytes, bytes, bytes]]:
            return [(int(q), str(label), bytes(key), bytes(value), bytes(refs))
                    for q, label, key, value, refs in top.conn.execute(
                        "SELECT seq, label, key, value, refs FROM entries WHERE seq > ? "
                        "ORDER BY seq LIMIT ?", (after, BATCH))]

        rows = top.run(page)
        if not rows:
            break
        seq = rows[-1][0]
        entries = [(label, key, value, _refs_of(refs)) for _, label, key, value, refs in rows]
        if not store.push(entries=entries):
            raise RuntimeError(f"remote {store.url}: push failed")
        pushed += len(rows)
        if progress is not None:
            progress(pushed, store.remote_stats.bytes_written)

    def slots() -> list[tuple[bytes, float, bytes]]:
        return [(bytes(k), float(m), bytes(d))
                for k, m, d, kind in top.conn.execute("SELECT key, mtime, data, kind FROM slots")
                if kind not in store.local_kinds]

    all_slots = top.run(slots)
    for start in range(0, len(all_slots), BATCH):
        if not store.push(entries=[], slots=all_slots[start:start + BATCH]):
            raise RuntimeError(f"remote {store.url}: push failed")
    return pushed, len(all_slots)


def pull_all(store: TieredStore) -> tuple[int, int]:
    """Copy every entry key and slot the remote lists into the top (checked); (entry keys
    found, slots found). Raises RuntimeError if the remote cannot list its keys or failed."""
    remote = store.remote
    lister = getattr(remote, "list_keys", None)
    if remote is None or lister is None:
        raise RuntimeError(f"remote {store.url}: cannot list its contents (pull needs a "
                           "Redis remote; an HTTP cache is filled on use instead)")
    entry_keys, slot_keys = lister()
    found = 0
    for start in range(0, len(entry_keys), BATCH):
        result = store.lookup(entry_keys[start:start + BATCH])
        found += sum(1 for entries in result.values() if entries)
    slots = 0
    for start in range(0, len(slot_keys), BATCH):
        slots += len(store.get_slots(slot_keys[start:start + BATCH]))
    if store.remote is None:
        raise RuntimeError(f"remote {store.url}: pull failed")
    return found, slots
