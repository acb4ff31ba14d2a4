"""The helper process that checks a warm run's data blobs while mypy starts up (see
:mod:`metastore.mypy.checked_ahead`).

The drop-in starts it (:func:`start`) before mypy is imported: a fresh interpreter
running :func:`main` (no SQLite connection crosses a ``fork``), which opens the store's
files read-only, checks the data blobs of the snapshot the hint names and writes its
answer on stdout. The build reads the answer when it first needs it
(:meth:`Helper.answer`), waiting no longer than its own check would take (at most
:data:`WAIT_S` seconds); no answer, a late one or a garbled one is no answer: the build
then checks every blob itself. The helper never
writes to the store and prints nothing else.

The helper runs beside mypy, so it is started only when a core is free for it
(:func:`a_core_is_free`): with every core busy it would take CPU from mypy's own start-up
(measured on rich, the other core kept busy: warm 1.42x stock with it, 1.08x without).

``MYPY_METASTORE_CHECK_AHEAD=0`` starts no helper (for measuring; the results are the
same); ``=wait`` starts one however busy the machine is and makes the build wait for the
answer however long the helper takes (up to :data:`PATIENT_WAIT_S`: for tests, whose
machines may be too busy for the race to go the usual way). POSIX only (the answer is
awaited with ``select``).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence

from metastore.config import Config, split_base
from metastore.mypy.checked_ahead import decode_answer, encode_answer, hint_key, place

ENV_CHECK_AHEAD = "MYPY_METASTORE_CHECK_AHEAD"
#: The longest the build waits for the helper's answer (it normally has it long before
#: it needs it; the build asks for less: what checking the blobs itself would cost).
WAIT_S = 1.0
#: The wait with ``MYPY_METASTORE_CHECK_AHEAD=wait``.
PATIENT_WAIT_S = 60.0
#: The helper's niceness: on a busy machine it yields to mypy (the build then checks the
#: blobs itself rather than wait).
NICENESS = 10
#: How long the helper waits for a lock on a store file (a reader is blocked only while
#: the file is not in WAL mode or is being recovered): past it, no answer.
BUSY_TIMEOUT_MS = 500

_current: Helper | None = None
Answer = tuple[bytes | None, bytes | None, frozenset[bytes]]


class Helper:
    """A started helper: the ``Ahead`` the build is given (see :mod:`metastore.mypy.state`)."""

    def __init__(self, process: subprocess.Popen[bytes], key: bytes, here: bytes, *,
                 patient: bool = False) -> None:
        self.hint_key = key
        self.place = here
        self._process = process
        self._patient = patient
        self._answered = False
        self._answer: Answer | None = None

    def answer(self, wait_s: float) -> Answer | None:
        """(hint, checksum, damaged digests) as the helper answered, None if it gave no
        answer; the first call waits for it at most ``wait_s`` (capped at WAIT_S; patient:
        PATIENT_WAIT_S) seconds, later calls return the same. Never raises."""
        if not self._answered:
            self._answered = True
            wait = PATIENT_WAIT_S if self._patient else min(wait_s, WAIT_S)
            try:
                self._answer = decode_answer(self._read(wait))
            except (OSError, ValueError):
                self._answer = None
        return self._answer

    def _read(self, wait_s: float) -> bytes:
        """The helper's output, whole; b"" if it is not done within ``wait_s`` seconds (then
        it is killed)."""
        process = self._process
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + wait_s
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                process.kill()
                process.wait()
                return b""
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        process.stdout.close()
        process.wait()
        return b"".join(chunks)


def a_core_is_free(loadavg: str = "/proc/loadavg") -> bool:
    """True if a core is free for the helper beside this process: the tasks runnable now
    (Linux: the fourth field of ``/proc/loadavg``, this process included) are fewer than the
    cores this process may use. Elsewhere, the one-minute load average leaves more than one
    core idle. Never raises (when unsure: True)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open(loadavg, "rb") as f:
            runnable = int(f.read().split()[3].split(b"/")[0])
        return runnable < cores
    except (OSError, IndexError, ValueError):
        pass
    try:
        return os.getloadavg()[0] < cores - 1
    except (AttributeError, OSError):
        return True


def start(config: Config, mypy_argv: Sequence[str]) -> None:
    """Start the helper for this command (``mypy_argv`` as mypy will get it), unless
    ``MYPY_METASTORE_CHECK_AHEAD=0``, not on POSIX, or no core is free for it (with
    ``=wait``: however busy the machine is); a helper that cannot be started is none
    (nothing is reported: the build checks the blobs itself)."""
    global _current
    mode = os.environ.get(ENV_CHECK_AHEAD, "1")
    if mode == "0" or os.name != "posix" or (mode != "wait" and not a_core_is_free()):
        return
    store = config.store.value
    key, here = hint_key(store, mypy_argv), place(os.getcwd())
    request = json.dumps({"store": store, "hint": key.hex(), "place": here.hex(),
                          "bases": [list(split_base(spec)) for spec in config.bases.value]})
    # Isolated (-I): not the current directory's modules (a project may have a package
    # named metastore), but this very package, wherever it was imported from.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = f"import sys; sys.path.insert(0, {package_root!r}); import {__name__} as m; m.main()"
    try:
        process = subprocess.Popen([sys.executable, "-I", "-c", code, request],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL)
    except OSError:
        return
    _current = Helper(process, key, here, patient=mode == "wait")


def current() -> Helper | None:
    """The helper started in this process, if any."""
    return _current


def answer_request(request: str) -> bytes:
    """The helper's answer to ``request`` (see :func:`start`): the hint, the snapshot it
    names for the directory, and those of its data blobs that are not in the store or not
    intact; no snapshot if anything cannot be read."""
    from metastore.mypy.checked_ahead import decode_hint, hinted_slot, snapshot_data_digests
    from metastore.store.api import Base, StoreError
    from metastore.store.local import Store

    try:
        fields = json.loads(request)
        key, here = bytes.fromhex(fields["hint"]), bytes.fromhex(fields["place"])
        bases = [Base(str(path), bool(immutable)) for path, immutable in fields["bases"]]
        store = Store(None, [Base(str(fields["store"])), *bases],
                      busy_timeout_ms=BUSY_TIMEOUT_MS)
    except (StoreError, ValueError, TypeError, KeyError):
        return encode_answer(None, None, ())
    try:
        found = store.get_slot(key)
        hint = found[1] if found is not None else None
        named = hinted_slot(decode_hint(hint), here) if hint is not None else None
        slot = store.get_slot(named) if named is not None else None
        checked = snapshot_data_digests(slot[1], store.get_slot) if slot is not None else None
        if checked is None:
            return encode_answer(hint, None, ())
        checksum, digests = checked
        return encode_answer(hint, checksum, digests - store.intact_blobs(sorted(digests)))
    except StoreError:
        return encode_answer(None, None, ())
    finally:
        store.close()


def main() -> None:
    """The helper: answer the request in ``sys.argv[1]`` on stdout."""
    try:
        os.nice(NICENESS)
    except (OSError, AttributeError):
        pass
    out = answer_request(sys.argv[1] if len(sys.argv) > 1 else "")
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    except OSError:
        pass  # the build is gone or stopped waiting


if __name__ == "__main__":
    main()
