"""Data blobs checked ahead of the build, by another process, while mypy starts up.

Before mypy may accept a meta the store offers, the unit's data blob must be known to be
there and intact (mypy would crash on a tree it cannot load; see
:meth:`metastore.mypy.reading.Reading._missing_parts`). On a warm run every module's unit
comes from the run snapshot, so that check reads and hashes every data blob the snapshot
names: at 10,000 modules 70-90 ms of the main process, on the way to mypy's first meta.
Nothing in it depends on mypy: the blobs are those of the snapshot this command's last
run left in its checkout's slot. So the drop-in starts a helper process
(:mod:`metastore.seams.ahead`) at once; it finds that snapshot through a *hint* slot (keyed
by the store, the current directory and mypy's argv; holding the key of the snapshot's
slot), checks its data blobs against their digests while mypy imports itself, parses its
options and finds its sources, and answers with the snapshot's checksum and the digests
it did not find intact. If the build reads the snapshot with that checksum (the same
records, so the same digests), it takes the answer for that snapshot's digests and checks
only the others itself (the ones not found intact included: so a damaged blob is reported
as before); the answer can only spare work, never add a blob. The hint is written at the
end of a run when it does not name this checkout's snapshot slot yet.

The helper checks more strictly than the build would (every layer's blobs against their
digests, bases included), so a digest it found intact is one the build would find
intact at that moment. A blob removed from the store between the helper's check and
mypy's read of it is the same race as between the build's own check and that read.

Knows nothing of processes or SQLite: slots in, digests and bytes out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from metastore.mypy import run_snapshot, snapshot_delta
from metastore.store.api import digest

GetSlot = Callable[[bytes], "tuple[float, bytes] | None"]

_ANSWER = b"mypy-metastore checked ahead 1\n"
_END = b"\nend\n"
_KEY = 32
#: The size of a hint's value: the key of a snapshot slot.
HINT_SIZE = _KEY
_NONE = bytes(_KEY)


def hint_key(store_path: str, cwd: str, argv: Sequence[str]) -> bytes:
    """The hint slot of a command: its store, current directory and mypy argv."""
    text = "\0".join([store_path, cwd, *argv]).encode("utf-8", "surrogateescape")
    return digest(b"\0ahead-hint-1\0" + text)


def snapshot_data_digests(data: bytes, get_slot: GetSlot) -> tuple[bytes, set[bytes]] | None:
    """The checksum of the run snapshot whose slot holds ``data`` (a full snapshot, a
    delta on one, or a snapshot derived from either; the slots they are on are read through
    ``get_slot``) and the data digests of all its records; None if there is no such
    snapshot. The checksum is the one the build's decoding gives the snapshot."""
    derived = run_snapshot.decode_derived(data)
    if derived is not None:
        slot = get_slot(derived.base_key)
        if slot is None:
            return None
        data = slot[1]
    found = snapshot_delta.decode_any(data, get_slot)
    if found is None:
        return None
    snapshot = found[0]
    return snapshot.checksum, {bytes.fromhex(d) for d in snapshot.data_texts()}


def encode_answer(hint: bytes | None, checksum: bytes | None, damaged: Iterable[bytes]
                  ) -> bytes:
    """The helper's answer as it is written to the build (read by :func:`decode_answer`):
    the snapshot slot the hint named, the checksum of the snapshot checked, and the data
    digests of that snapshot that are not in the store or not intact."""
    digests = sorted(damaged)
    return b"".join([_ANSWER, hint or _NONE, checksum or _NONE,
                     len(digests).to_bytes(4, "little"), *digests, _END])


def decode_answer(data: bytes) -> tuple[bytes | None, bytes | None, frozenset[bytes]] | None:
    """The (hint, checksum, damaged digests) in ``data``; None if it is not a whole answer
    (a helper that died half-way, garbage)."""
    head = len(_ANSWER) + 2 * _KEY + 4
    if not data.startswith(_ANSWER) or not data.endswith(_END) or len(data) < head:
        return None
    hint = data[len(_ANSWER): len(_ANSWER) + _KEY]
    checksum = data[len(_ANSWER) + _KEY: head - 4]
    count = int.from_bytes(data[head - 4: head], "little")
    if len(data) != head + _KEY * count + len(_END):
        return None
    digests = frozenset(data[i: i + _KEY] for i in range(head, head + _KEY * count, _KEY))
    return (None if hint == _NONE else hint), (None if checksum == _NONE else checksum), \
        digests
