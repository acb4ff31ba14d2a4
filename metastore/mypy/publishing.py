"""Publishing: complete, verified units assembled from mypy's writes of a build, written to
the store with the run's slots, counters and the run snapshot, in one transaction."""

from __future__ import annotations

import time
from typing import Any

from metastore.mypy.cache_codec import DATA_MTIME
from metastore.mypy.checked_ahead import decode_hint, updated_hint
from metastore.mypy.slot_kinds import AHEAD_HINT, MYPY_GLOBAL, PREVIOUS_UNIT, SOURCE_MEMO
from metastore.mypy.recording import Recording
from metastore.mypy.source_files import SourceFile
from metastore.mypy.state import PUBLISH_INTERVAL_S
from metastore.mypy.units import Manifest, Published, options_key, stem_for
from metastore.store.api import StoreError, digest
from metastore.store.api import now as clock


#: How long the end of a build waits for a helper it has not heard from (see _hint_slot).
HINT_WAIT_S = 0.1


class Publishing(Recording):
    """Units published from this run's writes."""

    def _commit(self, *, force: bool) -> None:
        try:
            view = self._view
            now = time.monotonic()
            if (force or view is None or view.parallel_worker
                    or now - self._last_publish >= PUBLISH_INTERVAL_S):
                self._last_publish = now
                self._publish()
        finally:
            if self._session is not None and self._view is not None:
                self._share_with_session()

    def _publish(self) -> None:
        self._account_fast_reads()
        assembled = {stem: unit for stem in sorted(self._dirty)
                     if (unit := self._assemble(stem)) is not None}
        units = list(assembled.values())
        now = clock()
        # Each published unit becomes its module's previous unit (named by key and meta).
        previous = [(self._previous_key(stem, source.path), now, key + bytes.fromhex(m.meta),
                     PREVIOUS_UNIT) for stem, (key, m, _, _, source, _) in assembled.items()]
        self._dirty.clear()
        memo = [(key, recorded, data, SOURCE_MEMO)
                for key, recorded, data in self._sources.pending()]
        # The snapshot, written in the same transaction, records these units too; a worker
        # tells the coordinator, which writes the snapshot.
        view = self._view
        scratch = self._session_scratch() if view is not None and view.parallel_worker \
            else None
        for stem, (key, manifest, _, parts, source, path) in assembled.items():
            published = Published(key, manifest, path, source.mtime, source.size,
                                   self._trusted_signature(source.stat))
            self._published_units[stem] = published
            if scratch is not None:
                scratch.put("u:" + stem, published.encode())
            # What the snapshot serves for it next time is made from these.
            self._blob_cache[manifest.meta] = parts[0]
            self._blob_cache[manifest.ex] = parts[2]
        snapshot = self._snapshot_slot() + self._hint_slot() if self._final else []
        if (not units and not self._unpublished_slots and not self._counter_deltas
                and not memo and not self._used and not snapshot and not self._used_slots):
            return
        if self.backend is None or not self._publishing:
            return
        entries = [(self._label, key, manifest.encode(), refs)
                   for key, manifest, refs, _, _, _ in units]
        blobs = [blob for _, _, _, parts, _, _ in units for blob in parts]
        slots = [(self._slot_key(name), mtime, data, MYPY_GLOBAL)
                 for name, (mtime, data) in self._slot_writes.items()
                 if name in self._unpublished_slots]
        slots += memo + previous + snapshot
        counters = dict(self._counter_deltas)
        counters["published"] = counters.get("published", 0) + len(units)
        try:
            written = self.backend.put(entries=entries, blobs=blobs, slots=slots,
                                       counters=counters, used=self._used,
                                       used_slots=self._used_slots)
        except StoreError as e:
            self._problem(f"{e}; this run's results were not saved")
            self._publishing = False
            return
        self.stats.published += len(units)
        self.stats.written_bytes += written
        self._counter_deltas.clear()
        self._unpublished_slots.clear()
        self._used.clear()
        self._used_slots.clear()

    def _hint_slot(self) -> list[tuple[bytes, float, bytes, str]]:
        """The hint to write at the end of the build (see :mod:`metastore.mypy.checked_ahead`):
        naming this checkout's snapshot slot for this directory, unless the hint did
        already, no helper was started or it gave no answer (then the hint it would have
        read is unknown: [])."""
        keys, view, ahead = self._snapshot_keys_memo, self._view, self._ahead
        if ahead is None or keys is None or view is None or view.parallel_worker:
            return []
        answer = ahead.answer(HINT_WAIT_S)
        if answer is None:
            return []
        hint = updated_hint(decode_hint(answer[0] or b""), ahead.place, keys[0])
        return [] if hint is None else [(ahead.hint_key, clock(), hint, AHEAD_HINT)]

    def _assemble(
        self, stem: str
    ) -> tuple[bytes, Manifest, list[bytes], list[bytes], SourceFile, str] | None:
        """A verified, normalised unit for ``stem`` from this run's writes (key, manifest,
        refs, blobs, the source file it was checked against, the path mypy used), or
        None."""
        view, codec = self._view_or_none(), self._codec
        if view is None or codec is None:
            return None
        suffix = codec.suffix
        meta_name = f"{stem}.meta{suffix}"
        data_name = f"{stem}.data{suffix}"
        ex_part = codec.ex_part
        ex_name = f"{stem}.{ex_part}{suffix}"
        meta_seq = self._write_seq.get(meta_name)
        ex_seq = self._write_seq.get(ex_name)
        if meta_seq is None or ex_seq is None or ex_seq < meta_seq:
            return None  # a touch, or a unit still being written
        if self._published_seq.get(stem, -1) >= ex_seq:
            return None
        self._published_seq[stem] = ex_seq
        self.stats.rechecked += 1
        meta = codec.read_meta(self._written[meta_name], data_name)
        if meta is None:
            return None
        info = codec.meta_info(meta)
        if stem_for(info.id, info.path) != stem:
            return None
        data = self._written.get(data_name)
        if data is None:
            offer = self._offers.get(stem)
            if offer is None or offer.path != info.path:
                return None
            data = self._unit_part(offer, "data", data_name)
            if data is None:
                return None
        if not data_matches_interface(data, meta, info.interface_hash):
            return None
        try:
            source = SourceFile(view.source_file(info.path), with_sha1=True)
        except OSError:
            return None
        if source.sha1 != info.hash:
            return None  # the file changed while mypy ran: publish nothing stale
        ex = self._written[ex_name]
        if codec.has_import_context(ex_part, ex):
            return None
        deps = list(info.deps)
        if ex_part == "meta_ex":
            meta_ex = codec.read_meta_ex(ex)
            if meta_ex is None:
                return None
            deps += codec.meta_ex_deps(meta_ex)
        roots = view.roots()
        token = roots.tokenize(info.path)
        stored_data = data if token == info.path else codec.replace_data_path(
            data, info.path, token)
        stored_ex = codec.map_error_files(ex_part, ex, roots.tokenize)
        stored_meta = codec.patched_meta(
            self._written[meta_name], data_name, path=token, mtime=0,
            data_mtime=int(DATA_MTIME))
        if stored_data is None or stored_ex is None or stored_meta is None:
            return None
        parts = [stored_meta, stored_data, stored_ex]
        bound = roots.fingerprint() if roots.mentions_any(parts) else ""
        manifest = Manifest(
            path=token, bound=bound, meta=digest(stored_meta).hex(),
            data=digest(stored_data).hex(), ex=digest(stored_ex).hex(), ex_part=ex_part,
            interface_hash=info.interface_hash, deps=tuple(deps),
            options=options_key(info.options),
            local_partial_types=bool(info.options.get("local_partial_types", True)),
            is_parallel=bool(info.options.get("is_parallel", False)),
        )
        refs = [bytes.fromhex(manifest.meta), bytes.fromhex(manifest.data),
                bytes.fromhex(manifest.ex)]
        return self._unit_key(stem, source.key), manifest, refs, parts, source, info.path


def data_matches_interface(data: bytes, meta: Any, interface_hash: str) -> bool:
    """mypy's interface hash: sha1 of the data entry plus the JSON of the plugin data."""
    from mypy.util import hash_digest_bytes, json_dumps

    try:
        computed = hash_digest_bytes(data + json_dumps(meta.plugin_data))
    except Exception:
        return False
    value = computed.hex() if isinstance(computed, bytes) else str(computed)
    return value == interface_hash
