"""Slots in the store's LRU (schema version 3): their last-use touch, their eviction and
their statistics by kind.  Functions over a writable :class:`~metastore.store.layer.Layer`
(kept out of it to keep that class readable).  A slot's kind is an opaque label chosen by
the writer; the store only groups by it.  Knows nothing of mypy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import apsw

from metastore.store.api import TOUCH_GRAIN_S, EvictResult
from metastore.store.sqlite import _chunks, _marks, transaction

if TYPE_CHECKING:
    from metastore.store.layer import Layer

#: A slot as given to a put: (key, mtime, data) or (key, mtime, data, kind).
SlotRow = tuple[bytes, float, bytes] | tuple[bytes, float, bytes, str]


def insert(conn: apsw.Connection, slots: Sequence[SlotRow], now: int) -> None:
    """Write (replace) *slots*, used now (inside the caller's transaction)."""
    conn.executemany("INSERT OR REPLACE INTO slots (key, mtime, data, kind, used) "
                     "VALUES (?, ?, ?, ?, ?)",
                     [(s[0], s[1], s[2], s[3] if len(s) > 3 else "", now)
                      for s in slots])


def touch(conn: apsw.Connection, keys: Sequence[bytes], now: int) -> None:
    """Mark the slots *keys* used now, those last used more than TOUCH_GRAIN_S ago only (so a
    slot's row is written at most once per grain; inside the caller's transaction).  Keys
    that are not in this layer (a base's slots) are ignored."""
    for chunk in _chunks(sorted(set(keys))):
        conn.execute(f"UPDATE slots SET used = ? WHERE used < ? AND key IN "
                     f"({_marks(len(chunk))})", (now, now - TOUCH_GRAIN_S, *chunk))


def oldest(layer: Layer) -> tuple[int | None, int | None]:
    """The oldest last-use time of the layer's entries and of its slots (None if none)."""
    row: Any = layer.run(lambda: layer.conn.execute(
        "SELECT (SELECT min(used) FROM entries), (SELECT min(used) FROM slots)").fetchall()[0])
    return (None if row[0] is None else int(row[0]), None if row[1] is None else int(row[1]))


def evict_oldest(layer: Layer, limit: int) -> tuple[EvictResult, int]:
    """One step of the LRU over entries and slots: up to *limit* slots last used no later
    than the oldest entry, else up to *limit* entries last used before the oldest slot.
    Returns what was evicted: (entries, slots)."""
    entries_from, slots_from = oldest(layer)
    if slots_from is not None and (entries_from is None or slots_from <= entries_from):
        n, _ = evict(layer, limit, used_before=None if entries_from is None
                     else entries_from + 1)
        return EvictResult(0, 0, 0), n
    if entries_from is None:
        return EvictResult(0, 0, 0), 0
    return layer.evict(limit, used_before=slots_from), 0


def evict(layer: Layer, limit: int, *, used_before: int | None = None) -> tuple[int, int]:
    """Delete up to *limit* least recently used slots of the top (only those last used
    before *used_before*, if given) in one transaction; return (slots, bytes) deleted.
    A reader that needs an evicted slot finds none (slots are never required: what they
    name is checked on use)."""
    def txn() -> tuple[int, int]:
        conn = layer.conn
        with transaction(conn):
            where = "" if used_before is None else "WHERE used < ?"
            params: tuple[int, ...] = () if used_before is None else (used_before,)
            rows: list[Any] = conn.execute(
                f"SELECT key, length(data) FROM slots {where} ORDER BY used, key "
                f"LIMIT {int(limit)}", params).fetchall()
            if not rows:
                return 0, 0
            for chunk in _chunks([row[0] for row in rows]):
                conn.execute(f"DELETE FROM slots WHERE key IN ({_marks(len(chunk))})", chunk)
            nbytes = sum(int(row[1]) for row in rows)
            layer._count(conn, {"evicted_slots": len(rows), "evicted_slot_bytes": nbytes})
            return len(rows), nbytes
    layer._bookkeeping_only = False
    return layer.run(txn)


def by_kind(conn: apsw.Connection, version: int) -> dict[str, tuple[int, int]]:
    """{kind: (slots, bytes of their data)}; kind "" for slots written without one (and
    every slot of a file older than version 3)."""
    kind = "kind" if version >= 3 else "''"
    return {str(k): (int(n), int(b)) for k, n, b in conn.execute(
        f"SELECT {kind}, count(*), coalesce(sum(length(data)), 0) FROM slots "
        f"GROUP BY 1 ORDER BY 1")}


def iterate(layer: Layer) -> list[tuple[str, bytes, int, bytes]]:
    """(kind, key, used, data) of every slot of the layer (admin use: reads everything)."""
    version = layer.version
    cols = "kind, key, used, data" if version >= 3 else "'', key, CAST(mtime AS INTEGER), data"
    return layer.run(lambda: [(str(k), bytes(key), int(u), bytes(d)) for k, key, u, d in
                              layer.conn.execute(f"SELECT {cols} FROM slots ORDER BY key")])
