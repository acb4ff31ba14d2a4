"""The stat-keyed memo of source content keys (metastore.mypy.source_files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metastore.mypy.source_files import (
    RACY_SECONDS, RACY_SUBSECOND_SECONDS, SourceFile, SourceKeys, old_enough)
from metastore.store.api import digest
from metastore.store.local import Store


def old_file(path: Path, text: str, age: float = 60.0) -> None:
    path.write_text(text)
    t = os.stat(path).st_mtime - age
    os.utime(path, (t, t))


def keys_with(store: Store, now: float) -> SourceKeys:
    return SourceKeys(store.get_slots, now=lambda: now)


def test_digest_remembered_and_trusted_while_stat_unchanged(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    src = tmp_path / "m.py"
    old_file(src, "x = 1\n")
    # ctime is "now" (utime changes it): record as if the run happened well after.
    later = os.stat(src).st_ctime + RACY_SECONDS + 1
    first = keys_with(store, later)
    got = first.get([str(src)])[str(src)]
    assert got is not None and got.was_read and got.key == digest(b"x = 1\n")
    records = first.pending()
    assert len(records) == 1
    store.put(slots=records)
    second = keys_with(store, later).get([str(src)])[str(src)]
    assert second is not None and not second.was_read and second.key == digest(b"x = 1\n")


def test_changed_stat_means_reread(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    src = tmp_path / "m.py"
    old_file(src, "x = 1\n")
    later = os.stat(src).st_ctime + RACY_SECONDS + 1
    first = keys_with(store, later)
    first.get([str(src)])
    store.put(slots=first.pending())
    old_file(src, "x = 22\n")  # another size and ctime, same old mtime
    again = keys_with(store, later + 10).get([str(src)])[str(src)]
    assert again is not None and again.was_read and again.key == digest(b"x = 22\n")


def test_racy_digest_is_not_recorded(tmp_path: Path) -> None:
    """A file changed less than the granularity margin before it was read could change
    again with an identical stat: its digest is used but never remembered."""
    store = Store(str(tmp_path / "s.db"))
    src = tmp_path / "m.py"
    src.write_text("x = 1\n")
    st = os.stat(src)
    if st.st_ctime_ns % 10**9 == 0 and st.st_mtime_ns % 10**9 == 0:
        pytest.fail("this test needs a file system with sub-second timestamps")
    keys = keys_with(store, st.st_ctime + RACY_SUBSECOND_SECONDS / 2)
    got = keys.get([str(src)])[str(src)]
    assert got is not None and got.key == digest(b"x = 1\n")
    assert keys.pending() == []


def test_missing_file_and_directory(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    (tmp_path / "ns").mkdir()
    got = keys_with(store, 0.0).get([str(tmp_path / "gone.py"), str(tmp_path / "ns")])
    assert got[str(tmp_path / "gone.py")] is None
    ns = got[str(tmp_path / "ns")]
    assert ns is not None and ns.is_dir


def test_sha1_on_request_matches_mypy(tmp_path: Path) -> None:
    from mypy.util import hash_digest

    src = tmp_path / "m.py"
    src.write_bytes(b"y: int = 2\n")
    assert SourceFile(str(src)).sha1 == ""
    assert SourceFile(str(src), with_sha1=True).sha1 == hash_digest(b"y: int = 2\n")


class _Stat:
    def __init__(self, mtime_ns: int, ctime_ns: int) -> None:
        self.st_mtime_ns, self.st_ctime_ns = mtime_ns, ctime_ns


@pytest.mark.parametrize(("mtime", "ctime", "before", "trusted"), [
    # whole-second timestamps (FAT, HFS+, ext3): two seconds of margin
    (100.0, 100.0, 101.9, False),
    (100.0, 100.0, 102.0, True),
    (100.0, 101.0, 102.5, False),  # the newer of the two counts
    # sub-second timestamps: a tenth of a second
    (100.25, 100.0, 100.3, False),
    (100.0, 100.25, 100.36, True),
    (100.5, 100.5, 100.59, False),
    (100.5, 100.5, 100.61, True),
])
def test_racy_margin_follows_the_timestamp_granularity(
        mtime: float, ctime: float, before: float, trusted: bool) -> None:
    st = _Stat(round(mtime * 1e9), round(ctime * 1e9))
    assert old_enough(st, before) is trusted  # type: ignore[arg-type]
    assert RACY_SECONDS == 2.0 and RACY_SUBSECOND_SECONDS == 0.1


@pytest.mark.parametrize("content", [b"", b"x", b"y = 1\n" * 20000])
def test_content_key_of_files_of_any_size(tmp_path: Path, content: bytes) -> None:
    src = tmp_path / "m.py"
    src.write_bytes(content)
    got = SourceFile(str(src), with_sha1=True)
    assert got.key == digest(content) and got.size == len(content) and got.was_read


def test_a_file_that_grew_since_its_stat_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_bytes(b"x = 1\n")
    st = os.stat(src)
    src.write_bytes(b"x = 1\ny = 2\n")
    with pytest.raises(OSError, match="changed while it was read"):
        SourceFile(str(src), st=st)


def test_without_remember_the_memo_is_neither_asked_nor_written(tmp_path: Path) -> None:
    asked: list[object] = []

    def get_slots(keys: object) -> dict[bytes, tuple[float, bytes]]:
        asked.append(keys)
        return {}

    src = tmp_path / "m.py"
    old_file(src, "x = 1\n")
    keys = SourceKeys(get_slots, now=lambda: os.stat(src).st_ctime + RACY_SECONDS + 1)
    got = keys.get([str(src)], remember=False)[str(src)]
    assert got is not None and got.key == digest(b"x = 1\n")
    assert asked == [] and keys.pending() == []
    assert keys.known(str(src)) is got
