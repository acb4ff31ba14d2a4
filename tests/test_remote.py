"""The remote tier without mypy: record/slot encoding and tags, the tiered store over a
fake tier (read-through, write-back, faults), the real Redis and HTTP tiers, the settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from helpers.servers import free_port, nginx_webdav, redis_server

from metastore.config import describe, load_config, split_argv
from metastore.store.api import digest
from metastore.store.local import Store
from metastore.store.tier import (
    Record, RemoteError, decode_record, decode_slot, encode_record, encode_slot, mask_url,
    open_tier, pack_list, unpack_list)
from metastore.store.tiered import TieredStore

KEY = b"k" * 32


def test_record_round_trip_and_tags() -> None:
    rec = Record("label", b"value", (digest(b"a"), digest(b"b")))
    for secret in (None, b"s"):
        assert decode_record(KEY, encode_record(KEY, rec, secret), secret) == rec
    signed = encode_record(KEY, rec, b"s")
    with pytest.raises(ValueError):
        decode_record(KEY, signed, b"other")  # another key
    with pytest.raises(ValueError):
        decode_record(b"x" * 32, signed, b"s")  # replayed under another entry key
    with pytest.raises(ValueError):
        decode_record(KEY, encode_record(KEY, rec, None), b"s")  # unsigned
    for bad in (b"", b"garbage", signed[:-5], signed[:20]):
        with pytest.raises(ValueError):
            decode_record(KEY, bad, b"s")
    assert decode_slot(KEY, encode_slot(KEY, 1.5, b"d", b"s"), b"s") == (1.5, b"d")
    with pytest.raises(ValueError):
        decode_slot(KEY, encode_slot(KEY, 1.5, b"d", b"t"), b"s")
    assert unpack_list(pack_list([b"a", b"", b"bc"])) == [b"a", b"", b"bc"]
    with pytest.raises(ValueError):
        unpack_list(b"\0\0\0\5ab")


def test_mask_url() -> None:
    assert mask_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("http://u:pw@h/x") == "http://u:***@h/x"
    assert mask_url("http://token@h") == "http://***@h"
    assert mask_url("http://h:80/a@b") == "http://h:80/a@b"


class FakeTier:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.entries: dict[bytes, list[bytes]] = {}
        self.slots: dict[bytes, bytes] = {}
        self.down = False
        self.calls = 0
        self.round_trips = 0

    def _call(self) -> None:
        self.calls += 1
        self.round_trips += 1
        if self.down:
            raise RemoteError("Connection refused")

    def get_entries(self, keys: Sequence[bytes]) -> dict[bytes, list[bytes]]:
        self._call()
        return {k: self.entries[k] for k in keys if k in self.entries}

    def get_blobs(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        self._call()
        return {d: self.blobs[d] for d in digests if d in self.blobs}

    def get_slots(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        self._call()
        return {k: self.slots[k] for k in keys if k in self.slots}

    def put(self, *, blobs: Mapping[bytes, bytes], entries: Mapping[bytes, Sequence[bytes]],
            slots: Mapping[bytes, bytes]) -> None:
        self._call()
        self.blobs.update(blobs)
        for k, rs in entries.items():
            self.entries.setdefault(k, []).extend(r for r in rs if r not in self.entries.get(k, []))
        self.slots.update(slots)

    def close(self) -> None:
        pass


def _tiered(tmp: Path, name: str, tier: FakeTier, secret: bytes | None = b"s",
            lines: list[str] | None = None) -> TieredStore:
    return TieredStore(Store(str(tmp / name)), tier, url="redis://:pw@h/0", secret=secret,
                       report=(lines.append if lines is not None else lambda m: None))


def test_write_back_then_read_through(tmp_path: Path) -> None:
    tier = FakeTier()
    one = _tiered(tmp_path, "one.db", tier)
    blob = b"blob bytes"
    one.put(entries=[("lbl", KEY, b"v1", [digest(blob)])], blobs=[blob],
            slots=[(b"s" * 32, 2.0, b"slot")], counters={"x": 1})
    assert digest(blob) in tier.blobs and KEY in tier.entries and b"s" * 32 in tier.slots
    one.close()

    lines: list[str] = []
    two = _tiered(tmp_path, "two.db", tier, lines=lines)
    found = two.lookup([KEY, b"m" * 32])
    assert [e.value for e in found[KEY]] == [b"v1"] and found[KEY][0].layer == 0
    assert found[b"m" * 32] == []
    assert two.get_slot(b"s" * 32) == (2.0, b"slot")
    calls = tier.calls
    two.lookup([b"m" * 32])  # a remote miss is remembered for the run
    assert tier.calls == calls
    assert two.remote_stats.hits == 3 and not lines  # entry key, blob, slot
    two.close()
    # L1 holds it all now, without the remote.
    alone = Store(str(tmp_path / "two.db"))
    assert [e.value for e in alone.lookup([KEY])[KEY]] == [b"v1"]
    assert alone.get_blob(digest(blob)) == blob and alone.get_slot(b"s" * 32) == (2.0, b"slot")
    alone.close()


def test_bad_remote_data_never_reaches_l1(tmp_path: Path) -> None:
    tier = FakeTier()
    one = _tiered(tmp_path, "one.db", tier)
    blob = b"blob bytes"
    one.put(entries=[("lbl", KEY, b"v1", [digest(blob)])], blobs=[blob])
    one.close()
    tier.blobs[digest(blob)] = b"garbage"
    lines: list[str] = []
    two = _tiered(tmp_path, "two.db", tier, lines=lines)
    assert two.lookup([KEY])[KEY] == []
    assert len(lines) == 1 and "does not match its digest" in lines[0]
    assert ":pw@" not in lines[0]
    two.close()
    forged: list[str] = []
    three = _tiered(tmp_path, "three.db", tier, secret=b"other", lines=forged)
    assert three.lookup([KEY])[KEY] == []
    assert len(forged) == 1 and "not signed with remote_key" in forged[0]
    three.close()
    for name in ("two.db", "three.db"):
        alone = Store(str(tmp_path / name))
        assert alone.lookup([KEY])[KEY] == [] and alone.get_blob(digest(blob)) is None
        alone.close()


def test_a_failing_remote_is_given_up_after_one_line(tmp_path: Path) -> None:
    tier = FakeTier()
    tier.down = True
    lines: list[str] = []
    store = _tiered(tmp_path, "one.db", tier, lines=lines)
    assert store.lookup([KEY])[KEY] == []
    store.get_slots([b"s" * 32])
    store.put(entries=[("lbl", KEY, b"v", [])], blobs=[])
    assert tier.calls == 1 and len(lines) == 1 and "continuing without it" in lines[0]
    assert [e.value for e in store.lookup([KEY])[KEY]] == [b"v"]  # L1 works on
    assert store.remote_stats.errors == 1
    store.close()


def test_read_only_remote_is_not_written(tmp_path: Path) -> None:
    tier = FakeTier()
    store = TieredStore(Store(str(tmp_path / "a.db")), tier, url="redis://h", read_only=True)
    store.put(entries=[("lbl", KEY, b"v", [])], slots=[(KEY, 1.0, b"x")])
    assert tier.calls == 0
    store.close()


def _wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_only_what_the_remote_lacks_is_checkpointed_at_close(tmp_path: Path) -> None:
    """A put the remote took, and fills from the remote, may stay in L1's WAL at close
    (the remote holds them); a put only L1 holds (a read-only remote) reaches the file."""
    tier = FakeTier()
    blob = b"blob bytes" * 1000
    entry = ("lbl", KEY, b"v1", [digest(blob)])
    one = _tiered(tmp_path, "one.db", tier)
    one.put(entries=[entry], blobs=[blob])
    one.close()
    assert _wal_bytes(tmp_path / "one.db") > len(blob)
    alone = TieredStore(Store(str(tmp_path / "alone.db")), tier, url="redis://h",
                        read_only=True)
    alone.put(entries=[entry], blobs=[blob])
    alone.close()
    assert _wal_bytes(tmp_path / "alone.db") == 0
    two = _tiered(tmp_path, "two.db", tier)
    assert [e.value for e in two.lookup([KEY])[KEY]] == [b"v1"]
    two.close()
    assert _wal_bytes(tmp_path / "two.db") > len(blob)
    # The file with its WAL holds everything, for any later connection.
    again = Store(str(tmp_path / "two.db"))
    assert again.get_blob(digest(blob)) == blob
    again.close()


def test_slots_of_a_local_kind_stay_in_l1(tmp_path: Path) -> None:
    """Slots of a local kind (facts about this machine's files) are neither pushed nor asked
    of the remote; a put holding one is not left to the remote (it reaches L1's file)."""
    tier = FakeTier()
    store = TieredStore(Store(str(tmp_path / "a.db")), tier, url="redis://h",
                        local_kinds=frozenset({"memo"}))
    shared, local = b"s" * 32, b"m" * 32
    store.put(slots=[(shared, 2.0, b"shared", "snapshot"), (local, 2.0, b"local", "memo")])
    assert set(tier.slots) == {shared}
    store.put(slots=[(b"n" * 32, 2.0, b"local too", "memo")])
    assert set(tier.slots) == {shared} and tier.calls == 1  # nothing to push: no call
    tier.slots[b"r" * 32] = encode_slot(b"r" * 32, 1.0, b"remote", None)
    assert store.get_slots([local, b"r" * 32], kind="memo") == {local: (2.0, b"local")}
    assert tier.calls == 1
    assert store.get_slots([b"r" * 32]) == {b"r" * 32: (1.0, b"remote")}
    store.close()
    assert _wal_bytes(tmp_path / "a.db") == 0


@pytest.mark.parametrize("server", [redis_server, nginx_webdav])
def test_real_tiers(tmp_path: Path, server: object) -> None:
    with server(tmp_path) as url:  # type: ignore[operator]
        tier = open_tier(url, timeout=2)
        blobs = {digest(b"%d" % i): b"%d" % i * 100 for i in range(200)}
        tier.put(blobs=blobs, entries={KEY: [b"r1"]}, slots={KEY: b"slot"})
        tier.put(blobs={}, entries={KEY: [b"r2"]}, slots={})
        trips = tier.round_trips
        assert tier.get_blobs(list(blobs) + [b"z" * 32]) == blobs
        assert tier.round_trips - trips <= 2  # one batch: pipelined
        assert sorted(tier.get_entries([KEY, b"q" * 32])[KEY]) == [b"r1", b"r2"]
        assert tier.get_slots([KEY, b"q" * 32]) == {KEY: b"slot"}
        tier.close()


def test_https_tier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """https:// on a real nginx with TLS: the server's certificate is verified (trusted here
    through SSL_CERT_FILE); an untrusted one is a remote error, not a traceback."""
    with nginx_webdav(tmp_path, tls=True) as url:
        assert url.startswith("https://")
        with pytest.raises(RemoteError, match="CERTIFICATE_VERIFY_FAILED"):
            open_tier(url, timeout=2).get_slots([KEY])
        cert = next(tmp_path.glob("nginx-*/cert.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        tier = open_tier(url, timeout=2)
        blobs = {digest(b"%d" % i): b"%d" % i * 100 for i in range(50)}
        tier.put(blobs=blobs, entries={KEY: [b"r1"]}, slots={KEY: b"slot"})
        assert tier.get_blobs(list(blobs)) == blobs
        assert tier.get_entries([KEY]) == {KEY: [b"r1"]}
        assert tier.get_slots([KEY, b"q" * 32]) == {KEY: b"slot"}
        tier.close()


def test_redis_py_tier(tmp_path: Path) -> None:
    """The tier on the redis package (rediss://, unix://), here on plain TCP."""
    from metastore.store.remote_redis import RedisTier

    with redis_server(tmp_path) as url:
        tier = RedisTier(url, timeout=2)
        tier.put(blobs={digest(b"x"): b"x"}, entries={KEY: [b"r1"]}, slots={KEY: b"s"})
        assert tier.get_blobs([digest(b"x"), KEY]) == {digest(b"x"): b"x"}
        assert tier.get_entries([KEY]) == {KEY: [b"r1"]}
        assert tier.get_slots([KEY]) == {KEY: b"s"}
        assert tier.list_keys() == ([KEY], [KEY])
        tier.close()


@pytest.mark.parametrize("scheme", ["redis", "http"])
def test_refused_is_a_remote_error(scheme: str) -> None:
    tier = open_tier(f"{scheme}://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(RemoteError):
        tier.get_blobs([KEY])
    tier.close()


def test_settings(tmp_path: Path) -> None:
    env = {"MYPY_METASTORE_REMOTE": "redis://:hunter2@h:6379/0",
           "MYPY_METASTORE_REMOTE_KEY": "k3y", "MYPY_METASTORE_REMOTE_TIMEOUT": "0.5",
           "MYPY_METASTORE_REMOTE_READ_ONLY": "1", "HOME": str(tmp_path)}
    config = load_config(environ=env, cwd=str(tmp_path))
    assert config.remote.value == "redis://:hunter2@h:6379/0"
    assert config.remote_timeout.value == 0.5 and config.remote_read_only.value
    shown = {k: v for k, v, _ in describe(config)}
    assert shown["remote"] == "redis://:***@h:6379/0" and shown["remote_key"] == "***"
    assert "hunter2" not in repr(describe(config)) and "k3y" not in repr(describe(config))
    flags, rest = split_argv(["--metastore-remote", "http://cache:8080", "x.py"])
    config = load_config(flags, environ=env, cwd=str(tmp_path))
    assert config.remote.value == "http://cache:8080" and rest == ["x.py"]
    assert config.remote.source == "flag --metastore-remote"
    (tmp_path / "mypy.ini").write_text("[mypy]\n[metastore]\nremote = ftp://x\n")
    from metastore.config import ConfigError
    with pytest.raises(ConfigError):
        load_config(mypy_argv=["--config-file", str(tmp_path / "mypy.ini")],
                    environ={"HOME": str(tmp_path)}, cwd=str(tmp_path))


def test_push_then_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from metastore.cli.admin import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in ("MYPY_METASTORE_STORE", "MYPY_METASTORE_BASES"):
        monkeypatch.delenv(name, raising=False)
    a = Store(str(tmp_path / "a.db"))
    blobs = [b"blob %d" % i for i in range(700)]
    # A source memo (a fact about this machine's files) is not pushed.
    a.put(entries=[("lbl", digest(b), b"v", [digest(b)]) for b in blobs], blobs=blobs,
          slots=[(KEY, 3.0, b"slot"), (b"m" * 32, 3.0, b"memo", "source-memo")])
    a.close()
    with redis_server(tmp_path / "srv") as url:
        monkeypatch.setenv("MYPY_METASTORE_REMOTE", url)
        monkeypatch.setenv("MYPY_METASTORE_REMOTE_KEY", "k")
        main(["--store", str(tmp_path / "a.db"), "push"])
        assert "pushed 700 entries and 1 slots" in capsys.readouterr().out
        main(["--store", str(tmp_path / "b.db"), "pull"])
        assert "pulled 700 entry keys and 1 slots" in capsys.readouterr().out
    b = Store(str(tmp_path / "b.db"))
    assert all(b.lookup([digest(x)])[digest(x)] for x in blobs[::50])
    assert b.get_blob(digest(blobs[3])) == blobs[3] and b.get_slot(KEY) == (3.0, b"slot")
    assert b.get_slot(b"m" * 32) is None
    counters = b.stats()[0].counters
    assert counters.get("remote_hits", 0) >= 700
    b.close()


def test_cold_runs_stop_asking_for_entries(tmp_path: Path) -> None:
    from metastore.store.tiered import FRUITLESS_LOOKUPS

    tier = FakeTier()
    store = _tiered(tmp_path, "a.db", tier)
    for i in range(3 * FRUITLESS_LOOKUPS):
        store.lookup([b"%031d" % i + b"x"])
    assert tier.calls == FRUITLESS_LOOKUPS
    for i in range(3 * FRUITLESS_LOOKUPS):
        store.get_slots([b"%031d" % i + b"y"])
    assert tier.calls == 2 * FRUITLESS_LOOKUPS
    store.close()


@pytest.mark.parametrize("scheme", ["redis", "http"])
def test_a_server_answering_garbage_is_a_remote_error(scheme: str) -> None:
    """A port where something else answers (bytes that are neither RESP nor HTTP)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):  # bounded: at most two connections, then the thread ends
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"\x00\xffgarbage that is no protocol\r\n" * 3)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        tier = open_tier(f"{scheme}://127.0.0.1:{port}", timeout=2)
        with pytest.raises(RemoteError):
            tier.get_blobs([KEY])
        tier.close()
    finally:
        listener.close()
        thread.join(5)


@pytest.mark.parametrize("scheme", ["redis", "http"])
def test_a_silent_server_costs_one_timeout(tmp_path: Path, scheme: str) -> None:
    """A server that accepts and never answers: one timeout, then the remote is given up."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel accepts; nobody reads or answers
    port = listener.getsockname()[1]
    lines: list[str] = []
    try:
        store = TieredStore(Store(str(tmp_path / "a.db")),
                            open_tier(f"{scheme}://127.0.0.1:{port}", timeout=0.5),
                            url=f"{scheme}://127.0.0.1:{port}", report=lines.append)
        start = time.monotonic()
        for i in range(5):
            assert store.lookup([b"%032d" % i])[b"%032d" % i] == []
            store.get_slots([KEY])
        store.put(entries=[("l", KEY, b"v", [])])
        elapsed = time.monotonic() - start
        assert 0.4 < elapsed < 2.0, elapsed
        assert len(lines) == 1 and "continuing without it" in lines[0], lines
        store.close()
    finally:
        listener.close()


def test_metastore_config_masks_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from metastore.cli.admin import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MYPY_METASTORE_REMOTE", "http://user:hunter2@cache:8080/x")
    monkeypatch.setenv("MYPY_METASTORE_REMOTE_KEY", "s3cret")
    for argv in (["config"], ["config", "--json"]):
        main(argv)
        out = capsys.readouterr().out
        assert "hunter2" not in out and "s3cret" not in out
        assert "http://user:***@cache:8080/x" in out
