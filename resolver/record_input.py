"""What clients send, checked: a PUT or batch body's values into stored rows. No I/O.

``rows_from_json`` is the one validator (``values_from_json`` wraps it into ``Value`` objects):
every integer range-checked, every format's data checked, types without control characters,
each value's data bounded. Errors are Handle's (responseCode 202, naming the value at fault;
HTTP 413 for a value too large). The stored shapes are ``resolver.records``'.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

import msgpack
import orjson

from resolver.records import (_CONTROL, _INT_TEXT, DEFAULT_PERMS, DEFAULT_TTL, FORMATS,
                              HIDDEN_TYPES, MAX_INDEX, MAX_VALUES, SECRET_PERMS, Value, invalid,
                              too_large)

__all__ = ["values_from_json", "rows_from_json", "row_from_json", "value_from_json", "data_size"]


def values_from_json(doc: Any, *, now: int, max_data: int | None = None) -> list[Value]:
    """Values from a PUT body: ``{"values": [...]}`` or a bare list, as Handle clients send.

    Accepts ``data`` (required) as ``{"format", "value"}`` or a bare string, ``index`` as int
    or numeric string (also inside HS_ADMIN and HS_VLIST), optional ``ttl`` and
    ``permissions`` ("1110": admin read, admin write, public read, public write). Every
    integer is range-checked (indexes 1..2^31-1, member indexes and TTLs 0..2^31-1), a type
    holds no control characters, and with ``max_data`` (``HttpConfig.max_value_data``) no
    value's data is larger than that (``data_size``). Every value gets the
    timestamp ``now``; a client's ``timestamp`` is ignored. Raises HandleError 202 naming the
    value at fault (with HTTP 413 for one too large). The checks are ``rows_from_json``'s.
    """
    return [Value(r[0], r[1], r[3], r[2], r[4], r[5], r[6])
            for r in rows_from_json(doc, now=now, max_data=max_data)]


def rows_from_json(doc: Any, *, now: int, max_data: int | None = None) -> list[list]:
    """``values_from_json``'s checks, answering stored rows (``[index, type, format, value,
    ttl, timestamp, perms]``, as ``encode_rows`` stores them): the batch path builds no
    ``Value`` objects. The one validator of what clients send."""
    if isinstance(doc, dict):
        if "values" not in doc:
            raise invalid('body must be {"values": [...]} or a list of values')
        doc = doc["values"]
    if not isinstance(doc, list):
        raise invalid('"values" must be a list')
    if len(doc) > MAX_VALUES:
        raise invalid(f"a record holds at most {MAX_VALUES} values; got {len(doc)}")
    out: list[list] = []
    seen: set[int] = set()
    for pos, item in enumerate(doc):
        row = row_from_json(item, now, pos, max_data)
        if row[0] in seen:
            raise invalid(f"values[{pos}]: index {row[0]} appears twice")
        seen.add(row[0])
        out.append(row)
    return out


def _int(x: Any, what: str) -> int:
    if isinstance(x, bool):
        raise invalid(f"{what} must be an integer")
    if isinstance(x, int):
        return x
    if isinstance(x, str) and _INT_TEXT.fullmatch(x.strip()):
        return int(x)
    raise invalid(f"{what} must be an integer; got {x!r}"[:200])


def data_size(value: Any) -> int:
    """Bytes a value's data takes stored: its UTF-8 bytes for text, else its msgpack form;
    ValueError if it cannot be stored."""
    if isinstance(value, str):  # most values: no encoding pass over an ASCII one
        return len(value) if value.isascii() else len(value.encode())
    try:
        return len(msgpack.packb(value, use_bin_type=True))
    except (OverflowError, TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def value_from_json(item: Any, *, now: int, where: str = "value",
                    max_data: int | None = None) -> Value:
    r = row_from_json(item, now, where, max_data)
    return Value(r[0], r[1], r[3], r[2], r[4], r[5], r[6])


# types already found well-formed (a handful in practice: URL, EMAIL, HS_ADMIN...); bounded
_GOOD_TYPES: dict[str, bool] = {}
_GOOD_TYPES_MAX = 4096


def row_from_json(item: Any, now: int, where: "int | str" = "value",
                  max_data: int | None = None) -> list:
    """One value as a stored row; ``where`` names it in errors (an int n: ``values[n]``,
    rendered only when there is an error)."""
    if not isinstance(item, dict):
        raise invalid(f"{_where(where)} must be an object")
    index = item.get("index")
    if type(index) is not int:
        if "index" not in item:
            raise invalid(f"{_where(where)}: index is missing")
        index = _int(index, f"{_where(where)}.index")
    if not 0 < index <= MAX_INDEX:
        raise invalid(f"{_where(where)}.index must be between 1 and {MAX_INDEX}")
    vtype = item.get("type")
    if type(vtype) is not str or vtype not in _GOOD_TYPES:
        if not isinstance(vtype, str) or not vtype or len(vtype) > 255:
            raise invalid(f"{_where(where)}.type must be a non-empty string of at most 255 "
                          "characters")
        if _CONTROL.search(vtype):
            raise invalid(f"{_where(where)}.type must not contain control characters")
        if len(_GOOD_TYPES) >= _GOOD_TYPES_MAX:
            _GOOD_TYPES.clear()
        _GOOD_TYPES[vtype] = vtype.upper() in HIDDEN_TYPES
    if "data" not in item:
        raise invalid(f"{_where(where)}.data is missing")
    data = item["data"]
    if type(data) is str:
        fmt, val = "string", data
    elif isinstance(data, dict):
        fmt = data.get("format", "string")
        val = data.get("value")
        if fmt not in FORMATS:
            raise invalid(f"{_where(where)}.data.format must be one of {', '.join(FORMATS)}; "
                          f"got {fmt!r}"[:300])
    elif isinstance(data, str):  # a str subclass
        fmt, val = "string", str(data)
    else:
        raise invalid(f"{_where(where)}.data must be a string or {{format, value}}")
    if fmt != "string" or type(val) is not str:
        val = _check_data(fmt, val, f"{_where(where)}.data.value")
    try:
        size = data_size(val)
    except ValueError:
        raise invalid(f"{_where(where)}.data.value cannot be stored") from None
    if max_data is not None and size > max_data:
        raise too_large(f"{_where(where)}.data is {size} bytes; a value holds at most {max_data}")
    if vtype == "HS_ADMIN" and fmt != "admin":
        raise invalid(f"{_where(where)}: HS_ADMIN needs data.format 'admin'")
    ttl = item.get("ttl", DEFAULT_TTL)
    if type(ttl) is not int:
        ttl = _int(ttl, f"{_where(where)}.ttl")
    if not 0 <= ttl <= MAX_INDEX:
        raise invalid(f"{_where(where)}.ttl must be between 0 and {MAX_INDEX} seconds")
    perms = SECRET_PERMS if _GOOD_TYPES.get(vtype, vtype.upper() in HIDDEN_TYPES) \
        else DEFAULT_PERMS
    if "permissions" in item:
        bits = item["permissions"]
        if not (isinstance(bits, str) and len(bits) == 4 and set(bits) <= {"0", "1"}):
            raise invalid(f"{_where(where)}.permissions must be 4 bits like '1110' "
                          "(admin read, admin write, public read, public write)")
        perms = int(bits, 2)
    return [index, vtype, fmt, val, ttl, now, perms]


def _where(where: "int | str") -> str:
    return f"values[{where}]" if isinstance(where, int) else where


def _check_data(fmt: str, val: Any, where: str) -> Any:
    if fmt == "string":
        if not isinstance(val, str):
            raise invalid(f"{where} must be a string for format 'string'")
    elif fmt == "base64":
        if not isinstance(val, str):
            raise invalid(f"{where} must be base64 text")
        try:
            base64.b64decode(val, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{where} is not valid base64") from None
    elif fmt == "hex":
        if not isinstance(val, str):
            raise invalid(f"{where} must be hex text")
        try:
            bytes.fromhex(val)
        except ValueError:
            raise invalid(f"{where} is not valid hex") from None
    elif fmt == "admin":
        if not isinstance(val, dict) or not isinstance(val.get("handle"), str):
            raise invalid(f"{where} must be {{handle, index, permissions}} for format 'admin'")
        perms = val.get("permissions", "111111111111")
        if not (isinstance(perms, str) and len(perms) == 12 and set(perms) <= {"0", "1"}):
            raise invalid(f"{where}.permissions must be 12 bits like '111111111111'")
        admin_index = _member_index(val.get("index", 300), f"{where}.index")
        val = {"handle": val["handle"], "index": admin_index, "permissions": perms}
    elif fmt == "vlist":
        if not isinstance(val, list):
            raise invalid(f"{where} must be a list of {{handle, index}} for format 'vlist'")
        val = [{"handle": _vlist_handle(m, f"{where}[{i}]"),
                "index": _member_index(m.get("index"), f"{where}[{i}].index")}
               for i, m in enumerate(val)]
    elif val is None:
        raise invalid(f"{where} is missing")
    else:  # site, key: any JSON document (bytes or non-text keys, say from msgpack, are not)
        try:
            orjson.dumps(val)
        except TypeError:
            raise invalid(f"{where} must be a JSON value (text keys, no bytes)") from None
    return val


def _member_index(x: Any, where: str) -> int:
    """The index of an HS_ADMIN or HS_VLIST member: 0..2^31-1 (unbounded ints would not even
    encode: msgpack stops at 2^64)."""
    index = _int(x, where)
    if not 0 <= index <= MAX_INDEX:
        raise invalid(f"{where} must be between 0 and {MAX_INDEX}")
    return index


def _vlist_handle(member: Any, where: str) -> str:
    if not isinstance(member, dict) or not isinstance(member.get("handle"), str):
        raise invalid(f"{where} must be {{handle, index}}")
    return member["handle"]
