"""Handle records: lists of typed values, their REST JSON shape and their stored bytes. No I/O.

A value is ``index``, ``type``, ``data {format, value}``, ``ttl``, ``timestamp`` and four
permission bits (admin read, admin write, public read, public write). The REST JSON shape is
Handle.Net's, field for field (see ``shared/reference``); permissions are not shown there.

Stored form (msgpack): ``[registered_text, [[index, type, format, value, ttl, ts, perms], ...]]``.
Arrays, not maps: at billions of records the field names would cost more than the data. The
resolve path renders straight from those arrays (``rest_values``) without building objects.
"""
from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, Iterable

import msgpack
import orjson

from resolver import errors

ADMIN_READ, ADMIN_WRITE, PUBLIC_READ, PUBLIC_WRITE = 8, 4, 2, 1
DEFAULT_PERMS = ADMIN_READ | ADMIN_WRITE | PUBLIC_READ
SECRET_PERMS = ADMIN_READ | ADMIN_WRITE  # HS_SECKEY and friends: never shown to anonymous callers
DEFAULT_TTL = 86400
ADMIN_INDEX = 100
FORMATS = ("string", "base64", "hex", "admin", "site", "vlist", "key")
HIDDEN_TYPES = frozenset({"HS_SECKEY", "HS_PRIVKEY"})
MAX_VALUES = 1000
MAX_INDEX = 2**31 - 1  # Handle.Net's indexes, admin/vlist member indexes and TTLs are int32
_INT_TEXT = re.compile(r"-?[0-9]{1,20}")  # ASCII digits only: str.isdigit() also accepts '²'
# C0, DEL and C1 controls, and the Unicode line/paragraph separators: never in a type name
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def invalid(message: str) -> errors.HandleError:
    return errors.HandleError(errors.INVALID_VALUE, message)


def too_large(message: str) -> errors.HandleError:
    """A value or record over its configured size: responseCode 202 with HTTP 413."""
    return errors.HandleError(errors.INVALID_VALUE, message, status=413)


@dataclass(frozen=True, slots=True)
class Value:
    index: int
    type: str
    value: Any
    format: str = "string"
    ttl: int = DEFAULT_TTL
    timestamp: int = 0
    perms: int = DEFAULT_PERMS

    @property
    def public(self) -> bool:
        return bool(self.perms & PUBLIC_READ)

    def to_row(self) -> list:
        return [self.index, self.type, self.format, self.value, self.ttl, self.timestamp, self.perms]

    def to_json(self) -> dict:
        return _row_json(self.to_row())


def admin_value(admin_handle: str, admin_index: int = 300, *, index: int = ADMIN_INDEX,
                permissions: str = "111111111111", timestamp: int = 0) -> Value:
    """An HS_ADMIN value naming who may administer the record."""
    return Value(index, "HS_ADMIN", {"handle": admin_handle, "index": admin_index,
                                     "permissions": permissions},
                 format="admin", timestamp=timestamp)


@lru_cache(maxsize=4096)
def iso_timestamp(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _row_json(row: list) -> dict:
    return {"index": row[0], "type": row[1], "data": {"format": row[2], "value": row[3]},
            "ttl": row[4], "timestamp": iso_timestamp(row[5])}


# ---------------------------------------------------------------- stored bytes

def encode(text: str, values: Iterable[Value]) -> bytes:
    """The stored bytes of a record registered as ``text``. Values are kept in index order."""
    return encode_rows(text, [v.to_row() for v in values])


def encode_rows(text: str, rows: list[list]) -> bytes:
    """``encode`` from stored rows (``[index, type, format, value, ttl, ts, perms]``), sorted
    here by index, in place."""
    if len(rows) > 1:
        rows.sort(key=_row_index)
    return _pack([text, rows])


_row_index = itemgetter(0)

# one packer reused (~0.3 µs a record less than packb); a pack runs in C holding the GIL, with
# no Python callback, so threads cannot interleave in it
_pack = msgpack.Packer(use_bin_type=True).pack


def decode_rows(data: bytes) -> tuple[str, list[list]]:
    text, rows = msgpack.unpackb(data, raw=False, use_list=True)
    return text, rows


def decode(data: bytes) -> tuple[str, list[Value]]:
    text, rows = decode_rows(data)
    return text, [Value(r[0], r[1], r[3], r[2], r[4], r[5], r[6]) for r in rows]


class Answer:
    """A record as a node answers it: rendered once, and kept small in a cache.

    The recursive node caches these, so a warm resolve renders nothing: ``public_json`` (the
    REST ``values`` array an anonymous, unfiltered GET gets) is made here and kept, with the
    value TTLs, and ``_rest``, what ``public_json`` lacks of the record (``_remainder``: the
    registered text, the permissions, any value without public read; ~25 B usually). An
    answer put in a cache is compact: ``len(answer)``, what a cache charges for it (so called
    as it is put), drops the stored bytes; the rare filtered, authorised or RPC read of a
    cached answer rebuilds ``data`` and ``rows`` from the two, exactly (msgpack packs equal
    objects to equal bytes). Until then ``data`` is the bytes given, at no cost. A cached demo
    record holds ~870 B compact in a TTLCache, ~1,250 B with its stored bytes
    (tests/test_answer_memory.py).
    """

    __slots__ = ("public_json", "ttls", "_data", "_rest")

    def __init__(self, data: bytes) -> None:
        text, rows = decode_rows(data)
        self._data: bytes | None = data
        self.render(rows)
        self._rest = _remainder(text, rows)

    def render(self, rows: list[list]) -> None:
        """``public_json`` and ``ttls`` from the rows ``data`` decodes to."""
        # a right-sized copy: orjson's bytes keep ~4 KiB of spare capacity (measured: 4,098 B
        # held for 403 B of JSON), ten times the answer, for as long as the cache keeps it
        self.public_json = bytes(memoryview(orjson.dumps(rest_values(rows))))
        ttls = tuple(r[4] for r in rows)
        # one shared tuple per distinct TTL list (most records have the same): ~150 B less each
        self.ttls = _TTLS.setdefault(ttls, ttls) if len(_TTLS) < 4096 else _TTLS.get(ttls, ttls)

    def __len__(self) -> int:
        """Bytes it costs in a cache, once compact (see the class): both byte strings (33 B
        of object each), this object, and the cache's key, entry and LRU link (~370 B of
        CPython objects, tracemalloc; tests/test_answer_memory.py holds it to what is held)."""
        if getattr(self, "_rest", None) is None:  # no remainder (a SyntheticAnswer)
            return len(self.public_json) + 370
        self._data = None
        return len(self.public_json) + len(self._rest) + 370

    @property
    def data(self) -> bytes:
        """The stored bytes: as given, or rebuilt once compact (the same bytes)."""
        if self._data is not None:
            return self._data
        rest = self._rest
        values = orjson.loads(self.public_json)
        if rest[0] == _MIXED:
            text, perms, hidden = msgpack.unpackb(rest[1:], raw=False, use_list=True)
        else:
            text, perms, hidden = rest[1:].decode(), [rest[0]] * len(values), ()
        rows = [[v["index"], v["type"], v["data"]["format"], v["data"]["value"], v["ttl"],
                 epoch_seconds(v["timestamp"]), p] for v, p in zip(values, perms)]
        for pos, row in hidden:
            rows.insert(pos, row)
        return msgpack.packb([text, rows], use_bin_type=True)

    @property
    def rows(self) -> list[list]:
        return decode_rows(self.data)[1]


_TTLS: dict[tuple, tuple] = {}  # Answer.ttls, shared (bounded: distinct TTL lists are few)
_MIXED = 0xFF  # first byte of a remainder that is not "every value public, one permission set"


def _remainder(text: str, rows: list[list]) -> bytes:
    """What ``public_json`` lacks of the stored record: in the usual case (every value public,
    all with the same permissions) their permission bits then the text (~0.3 µs); otherwise
    ``_MIXED`` then msgpack ``[text, permissions of the public values, [[position, row] of
    each value without public read]]``."""
    perms = {r[6] for r in rows}
    if len(perms) == 1:
        p = perms.pop()
        if p & PUBLIC_READ and 0 <= p < _MIXED:
            return bytes((p,)) + text.encode()
    hidden = [[pos, r] for pos, r in enumerate(rows) if not r[6] & PUBLIC_READ]
    public = [r[6] for r in rows if r[6] & PUBLIC_READ]
    return bytes((_MIXED,)) + msgpack.packb([text, public, hidden], use_bin_type=True)


@lru_cache(maxsize=4096)
def epoch_seconds(iso: str) -> int:
    """The inverse of ``iso_timestamp`` (``YYYY-MM-DDTHH:MM:SSZ``, read by position)."""
    if len(iso) != 20:  # a year before 1000 is not zero-padded by strftime
        return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    return calendar.timegm((int(iso[:4]), int(iso[5:7]), int(iso[8:10]), int(iso[11:13]),
                            int(iso[14:16]), int(iso[17:19])))


def rest_values(rows: list[list], *, types: Iterable[str] = (), indexes: Iterable[int] = (),
                authorised: bool = False) -> list[dict]:
    """Render stored rows as REST JSON values, filtered as Handle.Net filters them.

    ``types`` and ``indexes`` are alternatives (a value matching either is kept); with
    neither, all are kept. Values without public read are dropped unless ``authorised``.
    """
    types = {t.upper() for t in types}
    indexes = set(indexes)
    out = []
    for row in rows:
        if not authorised and not row[6] & PUBLIC_READ:
            continue
        if (types or indexes) and row[0] not in indexes and row[1].upper() not in types:
            continue
        out.append(_row_json(row))
    return out


def merge(old: list[Value], new: list[Value]) -> list[Value]:
    """``PUT ?index=…``: the new values replace those at the same index; the rest stay."""
    replaced = {v.index for v in new}
    return sorted([v for v in old if v.index not in replaced] + new, key=lambda v: v.index)


def admins(values: Iterable[Value]) -> list[tuple[int, str]]:
    """The (index, handle) identities named by the HS_ADMIN values of a record."""
    return [(v.value["index"], v.value["handle"]) for v in values
            if v.type == "HS_ADMIN" and isinstance(v.value, dict)]


__all__ = ["Answer", "Value", "admin_value", "encode", "encode_rows", "decode", "decode_rows",
           "rest_values", "merge", "admins", "iso_timestamp", "too_large", "public_record"]


def public_record(data: bytes) -> bytes:
    """Stored record bytes with only what an anonymous reader may see: values with public
    read, and never an HS_SECKEY (or other secret type) whatever its permissions. The same
    bytes when nothing is dropped (the usual case)."""
    text, rows = decode_rows(data)
    kept = [r for r in rows if r[6] & PUBLIC_READ
            and not (isinstance(r[1], str) and r[1].upper() in HIDDEN_TYPES)]
    return data if len(kept) == len(rows) else msgpack.packb([text, kept], use_bin_type=True)
