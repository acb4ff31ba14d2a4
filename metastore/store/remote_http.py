"""The HTTP tier (``http[s]://[user:password@]host[:port][/prefix]``): plain ``GET``/``PUT``
of objects in the bazel-remote/ccache layout - ``/cas/<hex digest>`` for blobs,
``/ac/<hex key>`` for the records of an entry key (a list, see
:func:`metastore.store.tier.pack_list`) and ``/ac/<hex blake3("slot\\0" + key)>`` for a
slot. Works with nginx WebDAV (``dav_methods PUT``), bazel-remote and S3-style gateways.

Built on the standard library's sockets on purpose: no new dependency (the package's only
runtime dependencies stay mypy, apsw and blake3), and not even :mod:`http.client`, whose
import (the email package, ssl) costs 30-40 ms, a sixth of a warm run of a 100-module
project; :mod:`ssl` is imported for ``https://`` only. What a client library would give is
done by hand here, within bounds:

- *connection reuse*: a few kept-alive connections per run, reopened when the server closes
  one;
- *HTTP/1.1 pipelining*: requests are written back to back on a connection (at most
  ``PIPELINE`` GETs or ``PIPELINE_PUT`` PUTs at a time, so a batch cannot deadlock on full
  socket buffers) and the
  responses read in order, so a batch of N objects costs about N / (``POOL`` x
  ``PIPELINE``) round trips instead of N;
- *bounded concurrency*: the connections are driven by a small thread pool (``POOL``
  threads), created at the first batch.

A 404 is a miss; any other unexpected status, a timeout or a closed connection is a
:class:`RemoteError` (the caller gives the tier up for the run).
"""

from __future__ import annotations

import base64
import socket
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from metastore.store.api import digest
from metastore.store.tier import RemoteError, mask_url, pack_list, unpack_list

POOL = 4
#: Requests in flight on one connection: small GETs all fit in the socket buffers at once;
#: PUTs carry bodies, fewer at a time.
PIPELINE = 256
PIPELINE_PUT = 32
#: Largest object accepted (a larger answer is an error, not a memory blow-up).
MAX_OBJECT = 256 * 1024 * 1024


class _Closed(ValueError):
    """The server closed the connection before a response."""


def _read_response(stream: Any) -> tuple[int, bytes, bool]:
    """(status, body, the server closes the connection) of the next response on *stream*.

    Read by hand: :class:`http.client.HTTPResponse` parses headers with the email package,
    which costs more than the whole request on loopback, hundreds of times per run. Bodies
    by Content-Length or chunked; anything else is an error (ValueError)."""
    line = stream.readline(65537)
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        if not line:
            raise _Closed("connection closed")
        raise ValueError(f"bad status line {line[:40]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    will_close = parts[0] == b"HTTP/1.0"
    for _ in range(100):
        header = stream.readline(65537)
        if header in (b"\r\n", b"\n"):
            break
        if not header:
            raise ValueError("connection closed")
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value == b"chunked"
        elif name == b"connection":
            will_close = value == b"close"
    else:
        raise ValueError("too many headers")
    if chunked:
        pieces = []
        while True:
            size = int(stream.readline(1026).split(b";")[0], 16)
            if size == 0:
                while stream.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            pieces.append(stream.read(size))
            stream.readline(3)
        body = b"".join(pieces)
    elif length is not None:
        if length > MAX_OBJECT:
            raise ValueError(f"object of {length} bytes refused")
        body = stream.read(length)
        if len(body) != length:
            raise ValueError("connection closed")
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        raise ValueError("response without a length")
    return status, body, will_close


class HttpTier:
    """A :class:`metastore.store.tier.Tier` on one HTTP server."""

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self._url = mask_url(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"bad HTTP URL {self._url}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port or (443 if self._https else 80)
        except ValueError as e:
            raise RemoteError(f"bad HTTP URL {self._url}: {e}") from None
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        headers = [f"Host: {parts.netloc.rpartition('@')[2]}"]
        if parts.username is not None:
            token = base64.b64encode(
                f"{urllib.parse.unquote(parts.username)}:"
                f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
            headers.append(f"Authorization: Basic {token}")
        self._headers = "".join(h + "\r\n" for h in headers)
        self._conns: list[tuple[socket.socket, Any] | None] = [None] * POOL
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._trips = 0

    @property
    def round_trips(self) -> int:
        return self._trips

    # -- requests

    def _batch(self, requests: Sequence[tuple[str, str, bytes | None]]
               ) -> list[tuple[int, bytes]]:
        """Run (method, path, body) requests; (status, body) of each, in order."""
        if not requests:
            return []
        depth = PIPELINE_PUT if any(body is not None for _, _, body in requests) else PIPELINE
        lanes = [list(range(i, len(requests), POOL)) for i in range(min(POOL, len(requests)))]
        self._trips += -(-len(lanes[0]) // depth)
        results: list[tuple[int, bytes]] = [(0, b"")] * len(requests)

        def lane(number: int) -> None:
            todo = lanes[number]
            for start in range(0, len(todo), depth):
                chunk = todo[start:start + depth]
                for i, answer in zip(chunk, self._pipeline(number, [requests[i] for i in chunk])):
                    results[i] = answer

        if len(lanes) == 1:
            lane(0)
        else:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(POOL, thread_name_prefix="metastore-http")
            for future in [self._pool.submit(lane, n) for n in range(len(lanes))]:
                future.result()
        return results

    def _connection(self, number: int) -> tuple[socket.socket, Any]:
        """Connection *number* (a socket and its buffered reader), opened if needed: TCP
        with Nagle off (requests go out whole), TLS verified against the system's CAs
        (``SSL_CERT_FILE``/``SSL_CERT_DIR`` apply) for ``https://``."""
        conn = self._conns[number]
        if conn is None:
            sock = socket.create_connection((self._host, self._port), self._timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._https:
                    import ssl

                    sock = ssl.create_default_context().wrap_socket(
                        sock, server_hostname=self._host)
            except BaseException:
                sock.close()
                raise
            conn = (sock, sock.makefile("rb"))
            self._conns[number] = conn
        return conn

    def _drop(self, number: int) -> None:
        conn, self._conns[number] = self._conns[number], None
        if conn is not None:
            conn[1].close()  # the reader holds the socket open until it is closed too
            conn[0].close()

    def _pipeline(self, number: int, requests: Sequence[tuple[str, str, bytes | None]]
                  ) -> list[tuple[int, bytes]]:
        """Send *requests* back to back on connection *number*, read their answers; a
        connection the server closes midway is reopened for the rest (twice at most)."""
        answers: list[tuple[int, bytes]] = []
        reopened = 0
        while len(answers) < len(requests):
            pending = requests[len(answers):]
            try:
                sock, stream = self._connection(number)
                sock.sendall(b"".join(self._encode(*r) for r in pending))
                for _ in pending:
                    status, body, will_close = _read_response(stream)
                    answers.append((status, body))
                    if will_close:
                        self._drop(number)
                        break
            except (OSError, ValueError) as e:
                self._drop(number)
                # A kept-alive connection the server closed meanwhile: reopen it once.
                if answers or reopened or not isinstance(e, (_Closed, ConnectionResetError,
                                                             BrokenPipeError)):
                    raise RemoteError(f"{type(e).__name__}: {e}".rstrip(": ")) from None
                reopened += 1
                continue
            if len(answers) < len(requests):
                reopened += 1
                if reopened > 2:
                    raise RemoteError("the server keeps closing the connection")
        return answers

    def _encode(self, method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._headers}"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        return (head + "\r\n").encode() + (body or b"")

    def _get(self, paths: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for path, (status, body) in zip(paths, self._batch([("GET", p, None) for p in paths])):
            if status == 200:
                out.append(body)
            elif status == 404:
                out.append(None)
            else:
                raise RemoteError(f"GET {path}: HTTP {status}")
        return out

    def _put(self, objects: Mapping[str, bytes]) -> None:
        for path, (status, _) in zip(objects, self._batch(
                [("PUT", p, b) for p, b in objects.items()])):
            if status not in (200, 201, 204):
                raise RemoteError(f"PUT {path}: HTTP {status}")

    # -- the tier

    @staticmethod
    def _slot_path(key: bytes) -> str:
        return "/ac/" + digest(b"slot\0" + key).hex()

    def get_entries(self, keys: Sequence[bytes]) -> dict[bytes, list[bytes]]:
        out: dict[bytes, list[bytes]] = {}
        for key, body in zip(keys, self._get(["/ac/" + k.hex() for k in keys])):
            if body is not None:
                try:
                    out[key] = unpack_list(body)
                except ValueError:
                    out[key] = [b""]  # garbage: reported by the caller
        return out

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        return {d: body for d, body in zip(digests, self._get(["/cas/" + d.hex()
                                                               for d in digests]))
                if body is not None}

    def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        return {k: body for k, body in zip(keys, self._get([self._slot_path(k) for k in keys]))
                if body is not None}

    def put(self, *, blobs: Mapping[bytes, bytes], entries: Mapping[bytes, Sequence[bytes]],
            slots: Mapping[bytes, bytes]) -> None:
        objects = {"/cas/" + d.hex(): data for d, data in blobs.items()}
        if entries:
            # An /ac/ object holds every record of its key: add to what is there (a record
            # another writer adds at the same moment may be lost: it is only a cache).
            keys = [k for k, records in entries.items() if records]
            present = self.get_entries(keys)
            for key in keys:
                old = [r for r in present.get(key, []) if r]
                merged = list(dict.fromkeys([*old, *entries[key]]))
                objects["/ac/" + key.hex()] = pack_list(merged)
        objects.update((self._slot_path(k), slot) for k, slot in slots.items())
        self._put(objects)

    def close(self) -> None:
        for number in range(POOL):
            self._drop(number)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
