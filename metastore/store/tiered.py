"""A tiered store: the local :class:`~metastore.store.local.Store` (L1) over a remote tier
(:mod:`metastore.store.tier`). Knows nothing of mypy.

- *Read-through*: what L1 lacks (entries of a key, blobs, slots) is asked of the remote in
  one batch per call; what comes back is checked - every blob against its blake3 digest,
  every record and slot parsed and, with a ``remote_key``, its HMAC-SHA256 tag checked -
  and only then written to L1 (an entry with every blob it needs, in one transaction), so
  L1 never holds bad data. Keys the remote lacked are remembered for the run.
- *Write-back*: what a run puts into L1 (entries with their blobs, slots; not counters) is
  pushed to the remote in the same call, before ``put`` returns (mypy ends with
  ``os._exit``: nothing may be left for later).
- *Local slots*: slots of a kind in ``local_kinds`` (facts about this machine, such as the
  mypy layer's per-file memos keyed by path, inode and ctime) stay in L1: never pushed,
  never asked of the remote, where no other machine could use them.
- *Cold runs*: after ``FRUITLESS_LOOKUPS`` remote lookups of entries in a row found
  nothing (a project the remote has never seen), entries are no longer asked of it in this
  run; the same for slots. So a cold run's module-by-module questions cost a bounded
  number of round trips; a later hit is only a lost shortcut, never a wrong answer.
- *Faults*: the first remote failure (down, refused, timeout, protocol garbage) gives the
  remote up for the rest of the process: one line through ``report``, then L1 alone. A
  record or blob that fails its checks is dropped (one line per kind of problem). So a bad
  remote costs at most one timeout per run and never changes what is served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from metastore.store.api import Entry, LayerStats, StoreError, digest
from metastore.store.layer import Layer
from metastore.store.local import Store
from metastore.store.slots import SlotRow
from metastore.store.tier import (
    Record, RemoteError, Tier, decode_record, decode_slot, encode_record, encode_slot, mask_url)


FRUITLESS_LOOKUPS = 8
BAD_RECORD = "entries that are malformed or not signed with remote_key"


class RemoteStats:
    """What the remote did in this process."""

    def __init__(self) -> None:
        self.hits = 0  # keys, slots and blobs found (and valid)
        self.misses = 0  # keys, slots and blobs asked for and not found
        self.bytes_read = 0
        self.bytes_written = 0
        self.errors = 0  # failures and rejected objects
        self.round_trips = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def line(self) -> str:
        return (f"remote_hits={self.hits} remote_misses={self.misses} "
                f"remote_read={self.bytes_read} remote_written={self.bytes_written} "
                f"remote_errors={self.errors} remote_round_trips={self.round_trips}")


class TieredStore:
    """L1 (*local*) over *remote*; the same calls as :class:`Store` for its users."""

    def __init__(self, local: Store, remote: Tier, *, url: str, read_only: bool = False,
                 secret: bytes | None = None,
                 report: Callable[[str], None] = lambda message: None,
                 local_kinds: frozenset[str] = frozenset()) -> None:
        self.local = local
        self.local_kinds = local_kinds
        self.remote: Tier | None = remote
        self.url = mask_url(url)
        self.read_only = read_only
        self._secret = secret or None
        self._report = report
        self.remote_stats = RemoteStats()
        self._missed: set[bytes] = set()  # entry keys the remote lacked this run
        self._missed_slots: set[bytes] = set()
        self._blobs: dict[bytes, bytes] = {}  # verified remote blobs not (yet) in L1
        self._fruitless = 0  # remote lookups in a row that found nothing
        self._fruitless_slots = 0  # the same for slots

    # -- what Store offers, unchanged

    @property
    def path(self) -> str | None:
        return self.local.path

    @property
    def top(self) -> Layer | None:
        return self.local.top

    @property
    def layers(self) -> list[Layer]:
        return self.local.layers

    @property
    def base_paths(self) -> tuple[str, ...]:
        return self.local.base_paths

    def stats(self) -> list[LayerStats]:
        return self.local.stats()

    def have_blobs(self, digests: Sequence[bytes]) -> set[bytes]:
        return self.local.have_blobs(digests) | {d for d in digests if d in self._blobs}

    # -- faults

    def _failed(self, error: Exception) -> None:
        self.remote_stats.errors += 1
        remote, self.remote = self.remote, None
        if remote is not None:
            self.remote_stats.round_trips = remote.round_trips
            remote.close()
        self._report(f"remote {self.url}: {error}; continuing without it for this run")

    def _rejected(self, what: str) -> None:
        self.remote_stats.errors += 1
        self._report(f"remote {self.url}: {what}; ignored (check the remote_key setting "
                     "or the server)")

    def _sync_trips(self) -> None:
        if self.remote is not None:
            self.remote_stats.round_trips = self.remote.round_trips

    def _fetch_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        """Verified blobs among *digests* from the remote (those of this run first)."""
        found = {d: self._blobs[d] for d in digests if d in self._blobs}
        wanted = [d for d in dict.fromkeys(digests) if d not in found]
        if not wanted or self.remote is None:
            return found
        try:
            got = self.remote.get_blobs(wanted)
        except RemoteError as e:
            self._failed(e)
            return found
        finally:
            self._sync_trips()
        for d in wanted:
            data = got.get(d)
            if data is None:
                self.remote_stats.misses += 1
            elif digest(data) != d:
                self._rejected("a blob does not match its digest (damaged or forged)")
            else:
                self.remote_stats.hits += 1
                self.remote_stats.bytes_read += len(data)
                found[d] = self._blobs[d] = data
        return found

    # -- read-through

    def lookup(self, keys: Sequence[bytes]) -> dict[bytes, list[Entry]]:
        result = self.local.lookup(keys)
        missing = [k for k, found in result.items() if not found and k not in self._missed]
        if not missing or self.remote is None or self._fruitless >= FRUITLESS_LOOKUPS:
            return result
        try:
            answers = self.remote.get_entries(missing)
        except RemoteError as e:
            self._failed(e)
            return result
        finally:
            self._sync_trips()
        records: list[tuple[bytes, Record]] = []
        self._fruitless = 0 if answers else self._fruitless + 1
        for key in missing:
            raw = answers.get(key)
            if not raw:
                self.remote_stats.misses += 1
                self._missed.add(key)
                continue
            for data in raw:
                try:
                    record = decode_record(key, data, self._secret)
                except ValueError:
                    self._rejected(BAD_RECORD)
                    continue
                records.append((key, record))
            self.remote_stats.bytes_read += sum(len(d) for d in raw)
        if not records:
            return result
        refs = list(dict.fromkeys(r for _, rec in records for r in rec.refs))
        have = self.local.have_blobs(refs)
        blobs = self._fetch_blobs([r for r in refs if r not in have])
        usable = [(rec.label, key, rec.value, rec.refs) for key, rec in records
                  if all(r in have or r in blobs for r in rec.refs)]
        if not usable:
            return result
        try:
            self.local.put(entries=usable, blobs=[blobs[r] for r in refs if r in blobs],
                           recoverable=True)
        except (StoreError, ValueError) as e:
            self._report(f"{e}; remote results not saved locally")
            return result
        hit = list(dict.fromkeys(key for _, key, _, _ in usable))
        self.remote_stats.hits += len(hit)
        result.update(self.local.lookup(hit))
        return result

    def get_blob(self, blob_digest: bytes) -> bytes | None:
        return self.get_blobs([blob_digest]).get(blob_digest)

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        found = self.local.get_blobs(digests)
        wanted = [d for d in digests if d not in found]
        if wanted:
            found.update(self._fetch_blobs(wanted))
        return found

    def intact_blobs(self, digests: Sequence[bytes]) -> set[bytes]:
        found = self.local.intact_blobs(digests)
        wanted = [d for d in digests if d not in found]
        if wanted:
            found.update(self._fetch_blobs(wanted))
        return found

    def get_slot(self, key: bytes) -> tuple[float, bytes] | None:
        return self.get_slots([key]).get(key)

    def get_slots(self, keys: Sequence[bytes], *, kind: str = ""
                  ) -> dict[bytes, tuple[float, bytes]]:
        """As :meth:`Store.get_slots`, then what L1 lacks from the remote - unless the
        slots asked are of a local kind (see ``local_kinds``)."""
        found = self.local.get_slots(keys)
        if kind and kind in self.local_kinds:
            return found
        wanted = [k for k in dict.fromkeys(keys)
                  if k not in found and k not in self._missed_slots]
        if not wanted or self.remote is None or self._fruitless_slots >= FRUITLESS_LOOKUPS:
            return found
        try:
            got = self.remote.get_slots(wanted)
        except RemoteError as e:
            self._failed(e)
            return found
        finally:
            self._sync_trips()
        fetched: list[tuple[bytes, float, bytes]] = []
        self._fruitless_slots = 0 if got else self._fruitless_slots + 1
        for key in wanted:
            raw = got.get(key)
            if raw is None:
                self.remote_stats.misses += 1
                self._missed_slots.add(key)
                continue
            self.remote_stats.bytes_read += len(raw)
            try:
                mtime, data = decode_slot(key, raw, self._secret)
            except ValueError:
                self._rejected(BAD_RECORD)
                continue
            self.remote_stats.hits += 1
            found[key] = (mtime, data)
            fetched.append((key, mtime, data))
        if fetched:
            try:
                self.local.put(slots=fetched, recoverable=True)
            except StoreError as e:
                self._report(f"{e}; remote results not saved locally")
        return found

    # -- write-back

    def put(self, *, entries: Sequence[tuple[str, bytes, bytes, Sequence[bytes]]] = (),
            blobs: Iterable[bytes] = (), slots: Sequence[SlotRow] = (),
            counters: Mapping[str, int] = {}, used: Iterable[tuple[int, int]] = (),
            used_slots: Iterable[bytes] = ()) -> int:
        """The entries and slots pushed to the remote (not slots of a local kind), then
        :meth:`Store.put` on L1 - recoverable if the push succeeded (a slot's kind label
        stays in L1: the remote's slots are read back with the default kind)."""
        blobs = list(blobs)
        pushed = False
        shared = [(row[0], row[1], row[2]) for row in slots
                  if len(row) < 4 or row[3] not in self.local_kinds]
        if self.remote is not None and not self.read_only and (entries or shared):
            pushed = self.push(entries=entries, blobs=blobs, slots=shared)
        return self.local.put(entries=entries, blobs=blobs, slots=slots, counters=counters,
                              used=used, used_slots=used_slots,
                              recoverable=pushed and len(shared) == len(slots))

    def push(self, *, entries: Sequence[tuple[str, bytes, bytes, Sequence[bytes]]],
             blobs: Sequence[bytes] = (), slots: Sequence[tuple[bytes, float, bytes]] = ()
             ) -> bool:
        """Write entries (with every blob they need, from *blobs* or L1) and slots to the
        remote in one batch; False if the remote failed (reported)."""
        if self.remote is None:
            return False
        by_digest = {digest(b): bytes(b) for b in blobs}
        needed = [r for _, _, _, refs in entries for r in refs if r not in by_digest]
        if needed:
            by_digest.update(self.local.get_blobs(needed))
        records: dict[bytes, list[bytes]] = {}
        for label, key, value, refs in entries:
            if all(r in by_digest for r in refs):
                records.setdefault(key, []).append(
                    encode_record(key, Record(label, bytes(value), tuple(refs)), self._secret))
        encoded = {key: encode_slot(key, mtime, data, self._secret) for key, mtime, data in slots}
        try:
            self.remote.put(blobs=by_digest, entries=records, slots=encoded)
        except RemoteError as e:
            self._failed(e)
            return False
        finally:
            self._sync_trips()
        self.remote_stats.bytes_written += (sum(map(len, by_digest.values()))
                                            + sum(len(r) for rs in records.values() for r in rs)
                                            + sum(map(len, encoded.values())))
        return True

    def close(self) -> None:
        """Close both tiers; what the remote did is added to L1's persistent counters
        (``remote_hits``, ``remote_misses``, ``remote_read_bytes``, ``remote_written_bytes``,
        ``remote_errors``; shown by ``metastore stats``)."""
        remote, self.remote = self.remote, None
        if remote is not None:
            self.remote_stats.round_trips = remote.round_trips
            remote.close()
        r = self.remote_stats
        counters = {"remote_hits": r.hits, "remote_misses": r.misses,
                    "remote_read_bytes": r.bytes_read, "remote_written_bytes": r.bytes_written,
                    "remote_errors": r.errors}
        if self.local.top is not None and any(counters.values()):
            try:
                self.local.put(counters={k: v for k, v in counters.items() if v})
            except StoreError:
                pass  # counters only
        self.local.close()
