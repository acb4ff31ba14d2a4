"""Store maintenance: export, merge, garbage collection and verification (knows nothing of
mypy).

Every operation works on store files through :mod:`metastore.store` and raises
:class:`~metastore.store.api.StoreError` (one line) for a problem with a file.  Long operations
take a *progress* callback called with (items done, bytes done); it decides whether and how
to show anything.

- :func:`export`: a compact, self-contained, read-only store file (journal mode DELETE,
  vacuumed, analysed).  Deterministic: the same set of entries (and slots) gives the same
  bytes, whatever order or time they were written in and whichever layers held them - seqs
  are renumbered in (key, value) order and ``created``/``used`` are 0.
- :func:`merge`: copies what a destination top lacks from other stores: append-only
  (``INSERT OR IGNORE``), identical entries deduplicated, nothing overwritten, in short
  ``BEGIN IMMEDIATE`` batches (so concurrent users of the destination only wait briefly).
- :func:`gc`: least-recently-used eviction (of entries and slots, one LRU) down to a size,
  and/or of entries and slots unused for some days; blobs are deleted after the grace
  period (see ``store.ORPHAN_GRACE_S``).
- :func:`verify`: schema, SQLite integrity, blob digests, references, the refs index and
  layer health; with repair, removes what is broken from the top (never anything valid).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

import apsw

from metastore.store import slots as slot_rows
from metastore.store.api import ORPHAN_GRACE_S, StoreError, digest
from metastore.store.api import now as clock
from metastore.store.layer import Layer
from metastore.store.local import Store
from metastore.store.sqlite import (
    _MIGRATE_V2, _MIGRATE_V3, _SCHEMA, APPLICATION_ID, PAGE_SIZE, SCHEMA_VERSION, _error,
    _marks, _refs_of, guarded, transaction)

Progress = Callable[[int, int], None]
_BATCH = 500


def _noop(count: int, nbytes: int) -> None:
    pass


# --------------------------------------------------------------------------- export


class ExportResult(NamedTuple):
    entries: int
    blobs: int
    blob_bytes: int
    skipped: int  # entries left out because a blob they need is in no layer
    file_bytes: int


def export(store: Store, out: str, *, labels: Collection[str] = (), since: int | None = None,
           progress: Progress | None = None) -> ExportResult:
    """Write the entries of every layer of *store* (only those with one of *labels*, and
    only those created or used at or after the unix time *since*, if given) with the blobs
    they need to a new store file *out*, replacing it atomically.  Slots are included only
    when no filter is given.  Raises StoreError."""
    progress = progress or _noop
    out = os.path.abspath(out)
    chosen: dict[tuple[bytes, bytes], tuple[str, bytes]] = {}
    slots: dict[bytes, tuple[float, bytes, str]] = {}
    for layer in store.layers:
        for label, key, value, refs in _select(layer, labels, since):
            chosen.setdefault((key, value), (label, refs))
        if not labels and since is None:
            kind = "kind" if layer.version >= 3 else "''"
            for key, mtime, data, k in _rows(layer, f"SELECT key, mtime, data, {kind} "
                                             "FROM slots"):
                slots.setdefault(bytes(key), (float(mtime), bytes(data), str(k)))
    needed = sorted({ref for label, refs in chosen.values() for ref in _refs_of(refs)})
    tmp = f"{out}.tmp-{os.getpid()}"
    for suffix in ("", "-journal"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    try:
        conn = guarded(out, lambda: apsw.Connection(tmp))
    except StoreError:
        raise
    try:
        def build() -> tuple[int, int, int]:
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = OFF")  # a private temporary file
            present: set[bytes] = set()
            nbytes = 0
            with transaction(conn):
                conn.execute(_SCHEMA)
                conn.execute(_MIGRATE_V2)
                conn.execute(_MIGRATE_V3)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                for i in range(0, len(needed), _BATCH):
                    found = store.get_blobs(needed[i:i + _BATCH])
                    for blob_digest in needed[i:i + _BATCH]:
                        data = found.get(blob_digest)
                        if data is not None:
                            conn.execute("INSERT INTO blobs (digest, size, data) VALUES "
                                         "(?, ?, ?)", (blob_digest, len(data), data))
                            present.add(blob_digest)
                            nbytes += len(data)
                    progress(len(present), nbytes)
                seq = 0
                for (key, value), (label, refs) in sorted(chosen.items()):
                    digests = _refs_of(refs)
                    if not all(d in present for d in digests):
                        continue
                    seq += 1
                    conn.execute("INSERT INTO entries (seq, label, key, value, refs, created, "
                                 "used) VALUES (?, ?, ?, ?, ?, 0, 0)",
                                 (seq, label, key, value, refs))
                    conn.executemany("INSERT OR IGNORE INTO refs (digest, seq) VALUES (?, ?)",
                                     [(d, seq) for d in digests])
                conn.executemany("INSERT INTO slots (key, mtime, data, kind, used) VALUES "
                                 "(?, ?, ?, ?, 0)",
                                 [(k, m, d, kind) for k, (m, d, kind) in sorted(slots.items())])
                # Blobs that only skipped entries needed are not kept.
                conn.execute("DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM refs)")
            conn.execute("ANALYZE")
            conn.execute("VACUUM")
            conn.execute("PRAGMA journal_mode = DELETE").fetchall()
            counts: Any = conn.execute("SELECT (SELECT count(*) FROM blobs), (SELECT "
                                       "coalesce(sum(size), 0) FROM blobs)").fetchall()[0]
            return seq, int(counts[0]), int(counts[1])
        entries, blobs, blob_bytes = guarded(tmp, build)
        conn.close()
        os.replace(tmp, out)
    except BaseException:
        conn.close()
        for suffix in ("", "-journal"):
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)
        raise
    return ExportResult(entries, blobs, blob_bytes, len(chosen) - entries,
                        os.path.getsize(out))


def _rows(layer: Layer, sql: str) -> list[Any]:
    def query() -> list[Any]:
        return layer.conn.execute(sql).fetchall()
    return layer.run(query)


def _select(layer: Layer, labels: Collection[str], since: int | None
            ) -> list[tuple[str, bytes, bytes, bytes]]:
    where: list[str] = []
    params: list[object] = []
    if labels:
        where.append(f"label IN ({_marks(len(labels))})")
        params.extend(sorted(labels))
    if since is not None:
        where.append("max(created, used) >= ?" if layer.version >= 2 else "created >= ?")
        params.append(since)
    sql = "SELECT label, key, value, refs FROM entries" + (
        " WHERE " + " AND ".join(where) if where else "")

    def query() -> list[tuple[str, bytes, bytes, bytes]]:
        return [(str(label), bytes(key), bytes(value), bytes(refs))
                for label, key, value, refs in layer.conn.execute(sql, params)]
    return layer.run(query)


# --------------------------------------------------------------------------- merge


class MergeResult(NamedTuple):
    entries: int  # entries new in the destination
    seen: int  # entries read from the sources
    blob_bytes: int  # bytes of blobs new in the destination
    skipped: int  # source entries whose blobs are in neither store


def merge(dest: Store, sources: Sequence[str], *, progress: Progress | None = None
          ) -> MergeResult:
    """Copy into the top of *dest* every entry (with its blobs) and slot of the stores at
    *sources* that it lacks.  Raises StoreError (ValueError if *dest* has no top)."""
    top = dest.top
    if top is None:
        raise ValueError("merge needs a destination top layer")
    progress = progress or _noop
    new = seen = nbytes = skipped = 0
    for path in sources:
        if os.path.exists(path) and os.path.samefile(path, top.path):
            raise _error(os.path.abspath(path), "is the destination itself",
                         "give other stores as sources")
        src = Layer(path, writable=False, busy_timeout_ms=60_000)
        try:
            last = 0
            while True:
                rows: list[Any] = src.run(lambda: src.conn.execute(
                    "SELECT seq, label, key, value, refs, created FROM entries WHERE seq > ? "
                    f"ORDER BY seq LIMIT {_BATCH}", (last,)).fetchall())
                if not rows:
                    break
                last = int(rows[-1][0])
                seen += len(rows)
                needed = sorted({d for row in rows for d in _refs_of(row[4])})
                have = dest.have_blobs(needed)
                blobs = src.get_blobs([d for d in needed if d not in have])
                entries = []
                for _, label, key, value, refs, created in rows:
                    if all(d in have or d in blobs for d in _refs_of(refs)):
                        entries.append((str(label), bytes(key), bytes(value), bytes(refs),
                                        int(created)))
                    else:
                        skipped += 1
                added, added_bytes = _write_batch(top, blobs, entries)
                new += added
                nbytes += added_bytes
                progress(seen, nbytes)
            kind = "kind" if src.version >= 3 else "''"
            slots: list[Any] = src.run(lambda: src.conn.execute(
                f"SELECT key, mtime, data, {kind}, {int(clock())} "
                "FROM slots").fetchall())
            for i in range(0, len(slots), _BATCH):
                chunk = slots[i:i + _BATCH]

                def put_slots(chunk: list[Any] = chunk) -> None:
                    with transaction(top.conn):
                        top.conn.executemany("INSERT OR IGNORE INTO slots (key, mtime, data, "
                                             "kind, used) VALUES (?, ?, ?, ?, ?)", chunk)
                top.run(put_slots)
        finally:
            src.close()
    return MergeResult(new, seen, nbytes, skipped)


def _write_batch(top: Layer, blobs: dict[bytes, bytes],
                 entries: list[tuple[str, bytes, bytes, bytes, int]]) -> tuple[int, int]:
    """One short transaction: blobs then entries, INSERT OR IGNORE; (new entries, new bytes)."""
    def txn() -> tuple[int, int]:
        conn = top.conn
        nbytes = 0
        with transaction(conn):
            for blob_digest, data in sorted(blobs.items()):
                conn.execute("INSERT OR IGNORE INTO blobs (digest, size, data) VALUES (?, ?, ?)",
                             (blob_digest, len(data), data))
                if conn.changes():
                    nbytes += len(data)
            # A merged entry counts as used now: it was wanted by whoever merged it.
            added = top._insert_entries(entries, int(clock()), int(clock()))
            if added:
                top._count(conn, {"merged": added})
        return added, nbytes
    return top.run(txn)


# --------------------------------------------------------------------------- gc


class GcResult(NamedTuple):
    entries: int
    blobs: int
    blob_bytes: int
    live_bytes: int
    file_bytes: int
    slots: int = 0  # slots evicted


def gc(store: Store, *, max_size: int | None = None, older_than_s: float | None = None,
       grace_s: float = ORPHAN_GRACE_S, progress: Progress | None = None) -> GcResult:
    """Evict from the top the entries and slots unused for *older_than_s*, then least
    recently used ones (entries and slots, one LRU) until its live size is at most
    *max_size*; delete blobs orphaned at least *grace_s*
    ago and return free pages to the file system."""
    top = store.top
    if top is None:
        raise ValueError("gc needs a top layer")
    progress = progress or _noop
    entries = 0
    slots_before = _slot_count(top)
    if older_than_s is not None:
        cutoff = int(clock() - older_than_s)
        while True:
            result = top.evict(_BATCH, used_before=cutoff)
            entries += result.entries
            progress(entries, 0)
            if result.entries < _BATCH:
                break
        while slot_rows.evict(top, _BATCH, used_before=cutoff)[0] == _BATCH:
            pass
    evicted, blobs, blob_bytes = store.trim(
        max_size if max_size is not None else 2**62, grace_s=grace_s,
        progress=lambda n, b: progress(entries + n, b))
    size = top.size()
    file_bytes = sum(os.path.getsize(p) for p in (top.path, top.path + "-wal")
                     if os.path.exists(p))
    return GcResult(entries + evicted, blobs, blob_bytes, size.live, file_bytes,
                    max(0, slots_before - _slot_count(top)))


def _slot_count(top: Layer) -> int:
    return int(_rows(top, "SELECT count(*) FROM slots")[0][0])


# --------------------------------------------------------------------------- verify


class LayerReport(NamedTuple):
    path: str
    role: str
    entries: int
    blobs: int
    blob_bytes: int
    problems: list[str]  # what is wrong, each one short phrase
    repaired: list[str]  # what --repair removed or rebuilt
    warnings: list[str]  # health notes that are not damage

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store, *, repair: bool = False, progress: Progress | None = None
           ) -> list[LayerReport]:
    """Check every layer of *store* (top first); with *repair*, fix the top.

    Problems: SQLite integrity, blobs whose data does not match their digest (or size),
    entries needing a blob that is in no layer at or below theirs, a refs index that does
    not match the entries.  Repair deletes the bad blobs and the entries that need missing
    or bad blobs (their other blobs become orphans, swept by gc), and rebuilds the refs
    index; an SQLite-level corruption cannot be repaired in place.
    """
    progress = progress or _noop
    layers = store.layers
    reports: list[LayerReport] = []
    done = [0, 0]

    def tick(n: int, b: int) -> None:
        done[0] += n
        done[1] += b
        progress(done[0], done[1])

    for index, layer in enumerate(layers):
        role = "top" if layer.writable else "base"
        reports.append(_verify_layer(layer, role, layers[index + 1:], repair and layer.writable,
                                     tick))
    return reports


def _verify_layer(layer: Layer, role: str, below: Sequence[Layer], repair: bool,
                  tick: Progress) -> LayerReport:
    problems: list[str] = []
    repaired: list[str] = []
    warnings: list[str] = []
    conn = layer.conn
    check: Any = layer.run(lambda: conn.execute("PRAGMA quick_check").fetchall())
    if [str(r[0]) for r in check] != ["ok"]:
        problems.append(f"SQLite integrity check failed ({str(check[0][0])[:80]}); delete the "
                        "file (it is only a cache) or restore a good copy")
        return LayerReport(layer.path, role, 0, 0, 0, problems, repaired, warnings)
    # Blob digests, in rowid batches (a read transaction per batch; writers are not blocked).
    bad: set[bytes] = set()
    blobs = blob_bytes = 0
    last = 0
    while True:
        rows: list[Any] = layer.run(lambda: conn.execute(
            "SELECT rowid, digest, size, data FROM blobs WHERE rowid > ? ORDER BY rowid "
            f"LIMIT {_BATCH}", (last,)).fetchall())
        if not rows:
            break
        last = int(rows[-1][0])
        nbytes = 0
        for _, blob_digest, size, data in rows:
            data = bytes(data)
            if digest(data) != bytes(blob_digest) or int(size) != len(data):
                bad.add(bytes(blob_digest))
            nbytes += len(data)
        blobs += len(rows)
        blob_bytes += nbytes
        tick(len(rows), nbytes)
    if bad:
        problems.append(f"{len(bad)} blob(s) do not match their digest")
    # References: every blob an entry needs is here (and good) or in a layer below.
    entries: list[Any] = layer.run(lambda: conn.execute(
        "SELECT seq, refs FROM entries").fetchall())
    needed = {d for _, refs in entries for d in _refs_of(refs)}
    have = layer.have_blobs(sorted(needed)) - bad
    for lower in below:
        rest = sorted(needed - have)
        if rest:
            have |= lower.have_blobs(rest)
    broken = [int(seq) for seq, refs in entries if not all(d in have for d in _refs_of(refs))]
    if broken:
        problems.append(f"{len(broken)} entr{'y' if len(broken) == 1 else 'ies'} need missing "
                        "or damaged blobs")
    # The refs index (schema 2) must match the entries' refs exactly.
    index_bad = False
    if layer.version >= 2:
        expected = {(d, int(seq)) for seq, refs in entries for d in _refs_of(refs)}
        actual: list[Any] = layer.run(lambda: conn.execute(
            "SELECT digest, seq FROM refs").fetchall())
        index_bad = {(bytes(d), int(s)) for d, s in actual} != expected
        if index_bad:
            problems.append("the refs index does not match the entries")
    wal = layer.path + "-wal"
    if not layer.writable and layer.immutable and os.path.exists(wal) and os.path.getsize(wal):
        warnings.append("declared immutable but has a non-empty -wal file beside it (what it "
                        "holds is not seen); export it or drop ?immutable=1")
    if repair and (bad or broken or index_bad):
        repaired = _repair(layer, bad, broken, index_bad)
        problems = []
        entries_left = len(entries) - len(broken)
        blobs_left = blobs - len(bad)
        return LayerReport(layer.path, role, entries_left, blobs_left, blob_bytes, problems,
                           repaired, warnings)
    return LayerReport(layer.path, role, len(entries), blobs, blob_bytes, problems, repaired,
                       warnings)


def _repair(layer: Layer, bad: set[bytes], broken: list[int], index_bad: bool) -> list[str]:
    def txn() -> list[str]:
        conn = layer.conn
        done: list[str] = []
        with transaction(conn):
            for blob_digest in sorted(bad):
                conn.execute("DELETE FROM blobs WHERE digest = ?", (blob_digest,))
                conn.execute("DELETE FROM orphans WHERE digest = ?", (blob_digest,))
            if bad:
                done.append(f"removed {len(bad)} blob(s) that did not match their digest")
            freed: set[bytes] = set()
            for seq in broken:
                rows: list[Any] = conn.execute("SELECT refs FROM entries WHERE seq = ?",
                                               (seq,)).fetchall()
                if rows:
                    freed.update(_refs_of(rows[0][0]))
                conn.execute("DELETE FROM entries WHERE seq = ?", (seq,))
                conn.execute("DELETE FROM refs WHERE seq = ?", (seq,))
            if broken:
                done.append(f"removed {len(broken)} entr{'y' if len(broken) == 1 else 'ies'} "
                            "that needed missing or damaged blobs")
            if index_bad:
                conn.execute("DELETE FROM refs")
                conn.executemany("INSERT OR IGNORE INTO refs (digest, seq) VALUES (?, ?)",
                                 [(d, seq) for seq, refs in conn.execute(
                                     "SELECT seq, refs FROM entries").fetchall()
                                  for d in _refs_of(refs)])
                done.append("rebuilt the refs index")
            now = int(clock())
            for blob_digest in sorted(freed - bad):
                conn.execute("INSERT OR IGNORE INTO orphans (digest, since, size) SELECT "
                             "digest, ?, size FROM blobs WHERE digest = ? AND NOT EXISTS "
                             "(SELECT 1 FROM refs WHERE digest = ?)",
                             (now, blob_digest, blob_digest))
            layer._count(conn, {"repaired": len(bad) + len(broken)})
        return done
    return layer.run(txn)
