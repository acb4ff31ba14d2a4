"""Data blobs checked ahead of the build, by another process, while mypy starts up.

Before mypy may accept a meta the store offers, the unit's data blob must be known to be
there and intact (mypy would crash on a tree it cannot load; see
:meth:`metastore.mypy.reading.Reading._missing_parts`). On a warm run every module's unit
comes from the run snapshot, so that check reads and hashes every data blob the snapshot
names: at 10,000 modules 70-90 ms of the main process, on the way to mypy's first meta.
Nothing in it depends on mypy: the blobs are those of the snapshot this command's last
run left. So the drop-in starts a helper process (:mod:`metastore.seams.ahead`) at once; it
finds that snapshot through a *hint* slot, checks its data blobs against their digests
while mypy imports itself, parses its options and finds its sources, and answers with the
snapshot's checksum and the digests it did not find intact. If the build reads the
snapshot with that checksum (the same records, so the same digests), it takes the answer
for that snapshot's digests and checks only the others itself (the ones not found intact
included: so a damaged blob is reported as before); the answer can only spare work, never
add a blob.

The hint is keyed by the store and mypy's argv, and names the snapshot slot the last runs
of that command read or wrote in each of the last :data:`HINT_PLACES` directories, most
recent first: the helper takes this directory's, else the most recent one - a new
checkout or a Pants sandbox (a new directory every run, the same argv) reads the last
snapshot written through the portable slot, which is the one the last run (in another
directory) wrote. The build rewrites the hint at its end only if it does not name this
directory's snapshot slot yet.

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

_ANSWER = b"mypy-metastore checked ahead 2\n"
_END = b"\nend\n"
_KEY = 32
_NONE = bytes(_KEY)
_LENGTH = 4
#: How many directories a hint remembers a snapshot slot for.
HINT_PLACES = 8

Hint = list[tuple[bytes, bytes]]  # (place, snapshot slot), most recent first


def hint_key(store_path: str, argv: Sequence[str]) -> bytes:
    """The hint slot of a command: its store and mypy argv."""
    text = "\0".join([store_path, *argv]).encode("utf-8", "surrogateescape")
    return digest(b"\0ahead-hint-2\0" + text)


def place(cwd: str) -> bytes:
    """What names a directory in a hint."""
    return digest(b"\0ahead-place\0" + cwd.encode("utf-8", "surrogateescape"))


def decode_hint(data: bytes) -> Hint:
    """The (place, snapshot slot) pairs of a hint; [] if ``data`` is not one."""
    if not data or len(data) % (2 * _KEY):
        return []
    return [(data[i: i + _KEY], data[i + _KEY: i + 2 * _KEY])
            for i in range(0, len(data), 2 * _KEY)]


def hinted_slot(hint: Hint, here: bytes) -> bytes | None:
    """The snapshot slot to check ahead in the directory ``here`` (a :func:`place`): the
    one the hint names for it, else the most recent one."""
    return next((slot for where, slot in hint if where == here), hint[0][1] if hint else None)


def updated_hint(hint: Hint, here: bytes, slot: bytes) -> bytes | None:
    """The hint naming ``slot`` for the directory ``here``, first, and the others after it
    (at most HINT_PLACES); None if ``hint`` names that slot for it already."""
    if (here, slot) in hint:
        return None
    kept = [(where, other) for where, other in hint if where != here]
    return b"".join(where + other for where, other in [(here, slot), *kept][:HINT_PLACES])


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
    the hint it read (its bytes), the checksum of the snapshot checked, and the data
    digests of that snapshot that are not in the store or not intact."""
    digests = sorted(damaged)
    raw = hint or b""
    return b"".join([_ANSWER, len(raw).to_bytes(_LENGTH, "little"), raw, checksum or _NONE,
                     len(digests).to_bytes(_LENGTH, "little"), *digests, _END])


def decode_answer(data: bytes) -> tuple[bytes | None, bytes | None, frozenset[bytes]] | None:
    """The (hint, checksum, damaged digests) in ``data``; None if it is not a whole answer
    (a helper that died half-way, garbage)."""
    if not data.startswith(_ANSWER) or not data.endswith(_END):
        return None
    at = len(_ANSWER)
    size = int.from_bytes(data[at: at + _LENGTH], "little")
    hint = data[at + _LENGTH: at + _LENGTH + size]
    at += _LENGTH + size
    checksum = data[at: at + _KEY]
    count = int.from_bytes(data[at + _KEY: at + _KEY + _LENGTH], "little")
    at += _KEY + _LENGTH
    if len(hint) != size or len(data) != at + _KEY * count + len(_END):
        return None
    digests = frozenset(data[i: i + _KEY] for i in range(at, at + _KEY * count, _KEY))
    return hint or None, (None if checksum == _NONE else checksum), digests
