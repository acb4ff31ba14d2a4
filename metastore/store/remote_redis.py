"""The Redis tier (``redis://[user:password@]host:port/db``), through the optional ``redis``
package (``pip install mypy-metastore[remote]``).

Layout: ``ms:cas:<hex digest>`` blob bytes (``SET NX``: content addressed, never replaced),
``ms:ac:<hex key>`` a hash of records (field: the record's own digest, so concurrent writers
of one key add to the set instead of replacing each other), ``ms:slot:<hex key>`` one slot
record (replaced). Each batch is one pipeline (one round trip): ``MGET`` for blobs and
slots, ``HGETALL`` per key for entries, ``SET``/``HSET`` for a put. The client neither
retries nor waits longer than the timeout: a tier that fails is given up for the run by
the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metastore.store.api import digest
from metastore.store.tier import RemoteError, mask_url

PREFIX = b"ms:"
#: Keys per command/pipeline (bounds the size of one request and one answer).
CHUNK = 1000


def _key(kind: bytes, raw: bytes) -> bytes:
    return PREFIX + kind + b":" + raw.hex().encode()


class RedisTier:
    """A :class:`metastore.store.tier.Tier` on one Redis server."""

    def __init__(self, url: str, *, timeout: float) -> None:
        try:
            import redis
            from redis.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise RemoteError("the Redis remote needs the redis package: "
                              "pip install 'mypy-metastore[remote]'") from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._url = mask_url(url)
        try:
            self._client: Any = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
                health_check_interval=0)
        except (ValueError, *self._errors) as e:
            raise RemoteError(f"bad Redis URL {self._url}: {e}") from None
        self._trips = 0

    @property
    def round_trips(self) -> int:
        return self._trips

    def _run(self, fill: Any) -> list[Any]:
        """Run one pipeline filled by *fill*; results (errors of single commands included
        as exception objects)."""
        self._trips += 1
        try:
            pipe = self._client.pipeline(transaction=False)
            fill(pipe)
            return list(pipe.execute(raise_on_error=False))
        except self._errors as e:
            raise RemoteError(f"{type(e).__name__}: {e}".rstrip(": ")) from None

    def get_entries(self, keys: Sequence[bytes]) -> dict[bytes, list[bytes]]:
        out: dict[bytes, list[bytes]] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]

            def fill(pipe: Any) -> None:
                for key in chunk:
                    pipe.hgetall(_key(b"ac", key))

            for key, found in zip(chunk, self._run(fill)):
                if isinstance(found, dict):
                    if found:
                        out[key] = [bytes(v) for v in found.values()]
                elif found is not None:
                    out[key] = [b""]  # a key of another type: garbage, reported by the caller
        return out

    def _mget(self, kind: bytes, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            (values,) = self._run(lambda pipe: pipe.mget([_key(kind, k) for k in chunk]))
            if isinstance(values, Exception) or not isinstance(values, list):
                raise RemoteError(f"MGET failed: {values}")
            out.update((k, bytes(v)) for k, v in zip(chunk, values) if v is not None)
        return out

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        return self._mget(b"cas", digests)

    def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        return self._mget(b"slot", keys)

    def put(self, *, blobs: Mapping[bytes, bytes], entries: Mapping[bytes, Sequence[bytes]],
            slots: Mapping[bytes, bytes]) -> None:
        def fill(pipe: Any) -> None:
            for d, data in blobs.items():
                pipe.set(_key(b"cas", d), data, nx=True)
            for key, records in entries.items():
                if records:
                    pipe.hset(_key(b"ac", key),
                              mapping={digest(r)[:16].hex(): r for r in records})
            for key, slot in slots.items():
                pipe.set(_key(b"slot", key), slot)

        if blobs or entries or slots:
            for result in self._run(fill):
                if isinstance(result, Exception):
                    raise RemoteError(f"write refused: {result}")

    def list_keys(self) -> tuple[list[bytes], list[bytes]]:
        """(entry keys, slot keys) the server holds (``SCAN``; for ``metastore pull``)."""
        out: tuple[list[bytes], list[bytes]] = ([], [])
        self._trips += 1
        try:
            for n, kind in enumerate((b"ac", b"slot")):
                pattern = PREFIX + kind + b":*"
                for name in self._client.scan_iter(match=pattern, count=1000):
                    try:
                        out[n].append(bytes.fromhex(bytes(name)[len(pattern) - 1:].decode()))
                    except ValueError:
                        continue
        except self._errors as e:
            raise RemoteError(f"{type(e).__name__}: {e}".rstrip(": ")) from None
        return out

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass
