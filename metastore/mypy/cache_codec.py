"""mypy's cache entries, decoded and re-encoded with the installed mypy's own classes.

Everything here is exact or refuses: a rewrite is only returned when re-encoding the
parts we touched reproduces the original bytes, so an entry we do not understand is
never altered, only kept out of the portable path.

Formats (mypy/build.py, mypy/cache.py of 2.4.1; 1.20 differs where noted):
- ``X.meta.ff``: two version bytes (``librt.internal.cache_version()``,
  ``mypy.cache.CACHE_VERSION``) then ``CacheMeta.write``; ``X.meta.json``: JSON of
  ``CacheMeta.serialize()``.
- ``X.meta_ex.ff`` / ``.json`` (2.x): ``CacheMetaEx`` - indirect dependencies with their
  interface hashes and the module's error tuples ``(file, line, column, end_line,
  end_column, severity, message, code)``.
- ``X.err.ff`` (1.20): the module's error tuples only.
- ``X.data.ff``: ``MypyFile.write``; the module path is the last string before
  ``is_partial_stub_package``, the future-import flags and ``END_TAG``. ``X.data.json``:
  a JSON object with a ``"path"`` key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from mypy import cache as mypy_cache
from mypy.util import json_dumps, json_loads

# mypy 1.20-2.4 build the fixed format on librt (a dependency of mypy).
from librt.internal import ReadBuffer, WriteBuffer, cache_version

__all__ = ["DATA_MTIME", "Codec", "MetaInfo", "cache_version", "canonical_json",
           "mypy_cache", "plugins_snapshot_bytes"]


#: The mtime every data entry reports. mypy records ``getmtime(data)`` in the meta and
#: compares it on the next run; a constant keeps that check true for every stored entry.
DATA_MTIME = 1.0

ErrorTuple = tuple[Any, ...]


class MetaInfo(NamedTuple):
    """What the store needs from a meta, independent of the format."""

    id: str
    path: str
    hash: str  # sha1 hex of the source bytes, "" for a namespace package directory
    interface_hash: str  # hex
    options: dict[str, object]
    deps: list[tuple[str, str]]  # (module id, interface hash hex) of direct dependencies


class Codec:
    """Encode and decode one cache format (fixed-format or JSON) of the installed mypy."""

    def __init__(self, fixed_format: bool) -> None:
        self.fixed_format = fixed_format
        self.suffix = ".ff" if fixed_format else ".json"
        #: The entry that completes a unit: 2.x writes ``meta_ex``, 1.20 ``err``.
        self.ex_part = "meta_ex" if hasattr(mypy_cache, "CacheMetaEx") else "err"

    # -- metas -----------------------------------------------------------------------

    def read_meta(self, data: bytes, data_file: str) -> Any | None:
        """Decode a meta entry into mypy's ``CacheMeta``; None if it is not one we can read."""
        try:
            if self.fixed_format:
                versions = (cache_version(), mypy_cache.CACHE_VERSION)
                if len(data) < 2 or (data[0], data[1]) != versions:
                    return None
                return mypy_cache.CacheMeta.read(ReadBuffer(data[2:]), data_file)
            return mypy_cache.CacheMeta.deserialize(json_loads(data), data_file)
        except Exception:
            return None

    def write_meta(self, meta: Any) -> bytes:
        """Encode ``meta`` exactly as mypy's ``write_cache_meta`` does (non-debug)."""
        if self.fixed_format:
            buf = WriteBuffer()
            meta.write(buf)
            return bytes([cache_version(), mypy_cache.CACHE_VERSION]) + buf.getvalue()
        result: bytes = json_dumps(meta.serialize())
        return result

    def meta_info(self, meta: Any) -> MetaInfo:
        """The fields the store keys and selects on."""
        hashes = [_hex(h) for h in meta.dep_hashes]
        return MetaInfo(
            id=meta.id,
            path=meta.path,
            hash=meta.hash,
            interface_hash=_hex(meta.interface_hash),
            options=dict(meta.options),
            deps=list(zip(meta.dependencies, hashes)),
        )

    def patched_meta(self, stored: bytes, data_file: str, **fields: object) -> bytes | None:
        """Re-encode a stored meta with some fields replaced; None if it does not decode."""
        if self.fixed_format and fields.keys() <= _HEAD_FIELDS:
            patched = self._patched_head(stored, fields)
            if patched is not None:
                return patched
        meta = self.read_meta(stored, data_file)
        if meta is None:
            return None
        for name, value in fields.items():
            setattr(meta, name, value)
        return self.write_meta(meta)

    def _patched_head(self, stored: bytes, fields: dict[str, object]) -> bytes | None:
        """A fixed-format meta with ``path``/``mtime``/``size`` replaced without decoding the
        rest: ``CacheMeta.write`` (1.20-2.4) begins with id, path, mtime, size. The head is
        read, encoded again and must reproduce the stored bytes exactly, else None (the
        caller decodes the whole meta)."""
        try:
            versions = (cache_version(), mypy_cache.CACHE_VERSION)
            if len(stored) < 2 or (stored[0], stored[1]) != versions:
                return None
            buf = ReadBuffer(stored[2:])
            head = (mypy_cache.read_str(buf), mypy_cache.read_str(buf),
                    mypy_cache.read_int(buf), mypy_cache.read_int(buf))
            old = WriteBuffer()
            _write_head(old, *head)
            old_bytes = bytes(old.getvalue())
            if stored[2:2 + len(old_bytes)] != old_bytes:
                return None
            new = WriteBuffer()
            _write_head(new, head[0], str(fields.get("path", head[1])),
                        int(fields.get("mtime", head[2])),  # type: ignore[call-overload]
                        int(fields.get("size", head[3])))  # type: ignore[call-overload]
            return stored[:2] + bytes(new.getvalue()) + stored[2 + len(old_bytes):]
        except Exception:
            return None

    # -- meta_ex (2.x) and err (1.20) ------------------------------------------------

    def read_meta_ex(self, data: bytes) -> Any | None:
        """Decode a 2.x ``CacheMetaEx``; None if it does not decode."""
        cls = getattr(mypy_cache, "CacheMetaEx", None)
        if cls is None:
            return None
        try:
            if self.fixed_format:
                return cls.read(ReadBuffer(data))
            return cls.deserialize(json_loads(data))
        except Exception:
            return None

    def write_meta_ex(self, meta_ex: Any) -> bytes:
        if self.fixed_format:
            buf = WriteBuffer()
            meta_ex.write(buf)
            return bytes(buf.getvalue())
        result: bytes = json_dumps(meta_ex.serialize())
        return result

    def meta_ex_deps(self, meta_ex: Any) -> list[tuple[str, str]]:
        return list(zip(meta_ex.dependencies, (_hex(h) for h in meta_ex.dep_hashes)))

    def map_error_files(self, part: str, data: bytes, fn: Callable[[str], str]) -> bytes | None:
        """Return the meta_ex/err entry with every error tuple's file mapped through ``fn``.

        None if the entry does not decode or does not re-encode to the same bytes.
        """
        if part == "meta_ex":
            meta_ex = self.read_meta_ex(data)
            if meta_ex is None or self.write_meta_ex(meta_ex) != data:
                return None
            meta_ex.error_lines = [_map_file(t, fn) for t in meta_ex.error_lines]
            return self.write_meta_ex(meta_ex)
        errors = self.read_errors(data)
        if errors is None or self.write_errors(errors) != data:
            return None
        return self.write_errors([_map_file(t, fn) for t in errors])

    def error_lines(self, part: str, data: bytes) -> list[ErrorTuple] | None:
        """The error tuples of a meta_ex (2.x) or err (1.20) entry; None if it does not decode."""
        if part == "meta_ex":
            meta_ex = self.read_meta_ex(data)
            return None if meta_ex is None else list(meta_ex.error_lines)
        return self.read_errors(data)

    def has_import_context(self, part: str, data: bytes) -> bool:
        """True if the errors carry "In module imported here" notes (``--show-error-context``).

        Those name the module that happened to import this one first, which is not part
        of a unit's key, so such an entry must not be shared. Undecodable counts as True.
        """
        errors = self.error_lines(part, data)
        if errors is None:
            return True
        return any(
            len(t) > 6 and t[0] is None and isinstance(t[6], str)
            and (": note: In module imported here" in t[6] or ": note: ... from here" in t[6])
            for t in errors
        )

    def read_errors(self, data: bytes) -> list[ErrorTuple] | None:
        """Decode a 1.20 ``.err`` entry."""
        try:
            if self.fixed_format:
                return list(mypy_cache.read_errors(ReadBuffer(data)))
            loaded = json_loads(data)  # 1.20 writes {"error_lines": [...]}
            return [tuple(t) for t in loaded["error_lines"]]
        except Exception:
            return None

    def write_errors(self, errors: Sequence[ErrorTuple]) -> bytes:
        if self.fixed_format:
            buf = WriteBuffer()
            mypy_cache.write_errors(buf, list(errors))
            return bytes(buf.getvalue())
        result: bytes = json_dumps({"error_lines": [list(t) for t in errors]})
        return result

    # -- data ------------------------------------------------------------------------

    def data_path(self, data: bytes, expected: str) -> bool:
        """True if the data entry records exactly ``expected`` as the module path."""
        return self.replace_data_path(data, expected, expected) is not None

    def replace_data_path(self, data: bytes, old: str, new: str) -> bytes | None:
        """Return the data entry with its module path ``old`` replaced by ``new``.

        None unless the entry provably records ``old`` in the path field.
        """
        if not self.fixed_format:
            try:
                obj = json_loads(data)
            except Exception:
                return None
            if not isinstance(obj, dict) or obj.get("path") != old:
                return None
            if json_dumps(obj) != data:
                return None
            obj["path"] = new
            result: bytes = json_dumps(obj)
            return result
        old_enc = _encode(mypy_cache.write_str, old)
        index = data.rfind(old_enc)
        if index <= 0:
            return None
        tail = data[index + len(old_enc) :]
        try:
            buf = ReadBuffer(tail)
            partial = mypy_cache.read_bool(buf)
            flags = mypy_cache.read_str_list(buf)
            tag = mypy_cache.read_tag(buf)
        except Exception:
            return None
        if tag != mypy_cache.END_TAG:
            return None
        out = WriteBuffer()
        mypy_cache.write_bool(out, partial)
        mypy_cache.write_str_list(out, flags)
        mypy_cache.write_tag(out, tag)
        if out.getvalue() != tail:
            return None
        if data[index - 1 : index] not in (_encode(mypy_cache.write_bool, True),
                                            _encode(mypy_cache.write_bool, False)):
            return None
        return data[:index] + _encode(mypy_cache.write_str, new) + tail


#: The leading fields of a fixed-format meta, patched without decoding the rest.
_HEAD_FIELDS = frozenset({"path", "mtime", "size"})


def _write_head(buf: Any, module_id: str, path: str, mtime: int, size: int) -> None:
    mypy_cache.write_str(buf, module_id)
    mypy_cache.write_str(buf, path)
    mypy_cache.write_int(buf, mtime)
    mypy_cache.write_int(buf, size)


def plugins_snapshot_bytes(snapshot: dict[str, str]) -> bytes:
    """The ``@plugins_snapshot.json`` entry mypy would write for ``snapshot``."""
    result: bytes = json_dumps(snapshot)
    return result


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _encode(writer: Callable[[Any, Any], None], value: object) -> bytes:
    buf = WriteBuffer()
    writer(buf, value)
    return bytes(buf.getvalue())


def _hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _map_file(error: ErrorTuple, fn: Callable[[str], str]) -> ErrorTuple:
    if error and isinstance(error[0], str):
        return (fn(error[0]), *error[1:])
    return error
