"""The Redis tier (``redis://[user:password@]host:port/db``).

Plain ``redis://`` is spoken by :class:`RespTier`, a minimal RESP2 pipeline on one socket of
the standard library: ``import redis`` alone costs 100-170 ms (it imports asyncio), as much
as a whole warm mypy run, so a warm run cannot afford it. ``rediss://`` (TLS) and
``unix://`` go through the optional ``redis`` package (``pip install
mypy-metastore[remote]``), :class:`RedisTier`.

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


class _Error:
    """A Redis error reply (``-ERR ...``) as a value, not raised: it belongs to one command
    of a pipeline."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __str__(self) -> str:
        return self.message


def _command(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Layout:
    """What both Redis clients share: blobs and slots are plain keys read with MGET."""

    def _mget(self, kind: bytes, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        raise NotImplementedError

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        return self._mget(b"cas", digests)

    def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        return self._mget(b"slot", keys)


class RespTier(_Layout):
    """A :class:`metastore.store.tier.Tier` on one Redis server, speaking RESP2 by hand:
    every batch is written at once and its replies read in order (one round trip)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        import urllib.parse

        self._url = mask_url(url)
        parts = urllib.parse.urlsplit(url)
        try:
            self._addr = (parts.hostname or "127.0.0.1", parts.port or 6379)
            db = int(parts.path.strip("/") or 0)
        except ValueError as e:
            raise RemoteError(f"bad Redis URL {self._url}: {e}") from None
        self._hello: list[bytes] = []
        if parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password)
            self._hello.append(_command("AUTH", *([user] if user else []), password))
        elif parts.username:
            self._hello.append(_command("AUTH", urllib.parse.unquote(parts.username)))
        if db:
            self._hello.append(_command("SELECT", db))
        self._timeout = timeout
        self._sock: Any = None
        self._file: Any = None
        self._trips = 0

    @property
    def round_trips(self) -> int:
        return self._trips

    def _pipeline(self, commands: list[bytes]) -> list[Any]:
        import socket

        self._trips += 1
        try:
            hello = 0
            if self._sock is None:
                self._sock = socket.create_connection(self._addr, self._timeout)
                self._sock.settimeout(self._timeout)
                self._file = self._sock.makefile("rb")
                commands = self._hello + commands
                hello = len(self._hello)
            self._sock.sendall(b"".join(commands))
            replies = [self._reply() for _ in commands]
        except (OSError, ValueError, IndexError) as e:
            self.close()
            raise RemoteError(f"{type(e).__name__}: {e}".rstrip(": ")) from None
        for reply in replies[:hello]:
            if isinstance(reply, _Error):
                self.close()
                raise RemoteError(f"refused: {reply}")
        return replies[hello:]

    def _reply(self) -> Any:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ValueError("connection closed" if not line else "malformed reply")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return _Error(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._file.read(n + 2)
            if len(data) != n + 2:
                raise ValueError("connection closed")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ValueError(f"malformed reply {line[:20]!r}")

    def get_entries(self, keys: Sequence[bytes]) -> dict[bytes, list[bytes]]:
        out: dict[bytes, list[bytes]] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            replies = self._pipeline([_command("HGETALL", _key(b"ac", k)) for k in chunk])
            for key, found in zip(chunk, replies):
                if isinstance(found, list):
                    if found:
                        out[key] = found[1::2]
                elif found is not None:
                    out[key] = [b""]  # another type: garbage, reported by the caller
        return out

    def _mget(self, kind: bytes, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            (values,) = self._pipeline([_command("MGET", *[_key(kind, k) for k in chunk])])
            if not isinstance(values, list) or len(values) != len(chunk):
                raise RemoteError(f"MGET failed: {values}")
            out.update((k, v) for k, v in zip(chunk, values) if isinstance(v, bytes))
        return out

    def put(self, *, blobs: Mapping[bytes, bytes], entries: Mapping[bytes, Sequence[bytes]],
            slots: Mapping[bytes, bytes]) -> None:
        commands = [_command("SET", _key(b"cas", d), data, "NX") for d, data in blobs.items()]
        for key, records in entries.items():
            if records:
                fields: list[bytes | str] = []
                for r in records:
                    fields += [digest(r)[:16].hex(), r]
                commands.append(_command("HSET", _key(b"ac", key), *fields))
        commands += [_command("SET", _key(b"slot", k), slot) for k, slot in slots.items()]
        for start in range(0, len(commands), CHUNK):
            for reply in self._pipeline(commands[start:start + CHUNK]):
                if isinstance(reply, _Error):
                    raise RemoteError(f"write refused: {reply}")

    def list_keys(self) -> tuple[list[bytes], list[bytes]]:
        """(entry keys, slot keys) the server holds (``SCAN``; for ``metastore pull``)."""
        out: tuple[list[bytes], list[bytes]] = ([], [])
        for n, kind in enumerate((b"ac", b"slot")):
            pattern = PREFIX + kind + b":*"
            cursor: bytes = b"0"
            while True:
                (reply,) = self._pipeline([_command("SCAN", cursor, "MATCH", pattern,
                                                    "COUNT", 1000)])
                if not isinstance(reply, list) or len(reply) != 2:
                    raise RemoteError(f"SCAN failed: {reply}")
                cursor, names = reply
                for name in names:
                    try:
                        out[n].append(bytes.fromhex(name[len(pattern) - 1:].decode()))
                    except ValueError:
                        continue
                if cursor == b"0":
                    break
        return out

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                self._file.close()
                sock.close()
            except OSError:
                pass


class RedisTier(_Layout):
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
