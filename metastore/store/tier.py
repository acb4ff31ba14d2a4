"""The storage-tier interface: what a remote tier below the local store offers, and the
bytes it holds. Knows nothing of mypy, of SQLite, or of any particular server.

A remote tier is a plain key-value service with two namespaces, as bazel-remote and ccache
lay theirs out:

- ``cas``: blob digest -> blob bytes (content addressed: a reader checks the digest);
- ``ac``: entry key -> the *records* stored under it (each one entry: label, value, the
  digests of the blobs it needs), and slot key -> one slot record (mtime, data).

Every operation is a batch (one call per batch, whatever the number of keys), so that a
tier can answer it in one round trip (a pipelined ``MGET`` for Redis, concurrent requests
on a few kept-alive connections for HTTP). A tier raises :class:`RemoteError` for anything
that went wrong on the way (connection refused, timeout, protocol garbage); a missing key
is not an error. What a tier returns is never trusted: :func:`decode_records` and
:func:`decode_slot` parse it defensively and check the HMAC-SHA256 tag when a key is
configured, and the tiered store checks every blob's blake3 digest.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from metastore.store.api import DIGEST_SIZE

ENTRY_MAGIC = b"MSE1"
SLOT_MAGIC = b"MSS1"
TAG_SIZE = 32


class RemoteError(Exception):
    """A remote tier failed (down, slow, refused, answered garbage). ``str()`` is one line."""


class Record(NamedTuple):
    """One entry as a remote tier holds it."""

    label: str
    value: bytes
    refs: tuple[bytes, ...]


class Tier(Protocol):
    """A remote storage tier (see the module docstring). Keys and digests are raw bytes;
    each backend names them as it likes (hex in URLs and Redis keys)."""

    def get_entries(self, keys: Sequence[bytes]) -> dict[bytes, list[bytes]]:
        """The encoded records stored under each key that has any (see :func:`encode_record`)."""
        ...

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        """The bytes stored under each digest that has any (not checked here)."""
        ...

    def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The encoded slot stored under each key that has one (see :func:`encode_slot`)."""
        ...

    def put(self, *, blobs: Mapping[bytes, bytes], entries: Mapping[bytes, Sequence[bytes]],
            slots: Mapping[bytes, bytes]) -> None:
        """Store blobs (by digest), add encoded records to their keys' sets, replace slots."""
        ...

    @property
    def round_trips(self) -> int:
        """Sequential waits on the network so far (a batch counts once per wave)."""
        ...

    def close(self) -> None: ...


def _tag(secret: bytes | None, kind: bytes, key: bytes, body: bytes) -> bytes:
    if not secret:
        return b""
    return hmac.new(secret, kind + b"\0" + key + body, hashlib.sha256).digest()


def encode_record(key: bytes, record: Record, secret: bytes | None) -> bytes:
    """One record's bytes: magic, label, value, refs, then its tag (HMAC-SHA256 over the
    key and everything before it when *secret* is set, else empty)."""
    label = record.label.encode()
    body = b"".join((ENTRY_MAGIC, struct.pack(">HI", len(label), len(record.value)), label,
                     record.value, struct.pack(">H", len(record.refs)), *record.refs))
    tag = _tag(secret, b"entry", key, body)
    return body + struct.pack(">B", len(tag)) + tag


def decode_record(key: bytes, data: bytes, secret: bytes | None) -> Record:
    """Parse and check one record; ValueError if it is malformed, or (with *secret*) has no
    valid tag for this key."""
    try:
        if data[:4] != ENTRY_MAGIC:
            raise ValueError("bad magic")
        label_len, value_len = struct.unpack_from(">HI", data, 4)
        pos = 10
        label = data[pos:pos + label_len].decode()
        pos += label_len
        value = data[pos:pos + value_len]
        pos += value_len
        (nrefs,) = struct.unpack_from(">H", data, pos)
        pos += 2
        refs = tuple(data[pos + i * DIGEST_SIZE:pos + (i + 1) * DIGEST_SIZE]
                     for i in range(nrefs))
        pos += nrefs * DIGEST_SIZE
        body = data[:pos]
        (tag_len,) = struct.unpack_from(">B", data, pos)
        tag = data[pos + 1:]
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"malformed record: {e}") from None
    if len(value) != value_len or any(len(r) != DIGEST_SIZE for r in refs) or \
            len(tag) != tag_len:
        raise ValueError("truncated record")
    if secret and not hmac.compare_digest(tag, _tag(secret, b"entry", key, body)):
        raise ValueError("missing or invalid tag")
    return Record(label, bytes(value), refs)


def encode_slot(key: bytes, mtime: float, data: bytes, secret: bytes | None) -> bytes:
    body = SLOT_MAGIC + struct.pack(">dI", mtime, len(data)) + data
    tag = _tag(secret, b"slot", key, body)
    return body + struct.pack(">B", len(tag)) + tag


def decode_slot(key: bytes, blob: bytes, secret: bytes | None) -> tuple[float, bytes]:
    """Parse and check one slot; ValueError as :func:`decode_record`."""
    try:
        if blob[:4] != SLOT_MAGIC:
            raise ValueError("bad magic")
        mtime, size = struct.unpack_from(">dI", blob, 4)
        pos = 16
        data = blob[pos:pos + size]
        pos += size
        body = blob[:pos]
        (tag_len,) = struct.unpack_from(">B", blob, pos)
        tag = blob[pos + 1:]
    except struct.error as e:
        raise ValueError(f"malformed slot: {e}") from None
    if len(data) != size or len(tag) != tag_len or mtime != mtime:
        raise ValueError("truncated slot")
    if secret and not hmac.compare_digest(tag, _tag(secret, b"slot", key, body)):
        raise ValueError("missing or invalid tag")
    return float(mtime), bytes(data)


def pack_list(items: Sequence[bytes]) -> bytes:
    """Several records as one object (the HTTP backend's ``/ac/`` bodies)."""
    return b"".join(struct.pack(">I", len(i)) + i for i in items)


def unpack_list(data: bytes) -> list[bytes]:
    """The inverse of :func:`pack_list`; ValueError if malformed."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated list")
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + n > len(data):
            raise ValueError("truncated list")
        out.append(bytes(data[pos:pos + n]))
        pos += n
    return out


def mask_url(url: str) -> str:
    """*url* with its password (or lone user token) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    creds, _, host = rest.partition("@")
    user, colon, _ = creds.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}://{shown}@{host}"


def open_tier(url: str, *, timeout: float) -> Tier:
    """The tier for *url*: ``redis://`` (built in), ``rediss://``/``unix://`` (need the
    optional ``redis`` package: ``pip install mypy-metastore[remote]``) or
    ``http://``/``https://``.
    Raises RemoteError for an unknown scheme or a missing package; connects lazily."""
    scheme = url.partition("://")[0].lower()
    if scheme == "redis":
        from metastore.store.remote_redis import RespTier
        return RespTier(url, timeout=timeout)
    if scheme in ("rediss", "unix"):
        from metastore.store.remote_redis import RedisTier
        return RedisTier(url, timeout=timeout)
    if scheme in ("http", "https"):
        from metastore.store.remote_http import HttpTier
        return HttpTier(url, timeout=timeout)
    raise RemoteError(f"unsupported remote URL scheme {scheme!r}; "
                      "use redis://, rediss://, http:// or https://")
