"""The synthetic population: billions of registered identifiers computed on demand, never stored.

An enterprise with a count of N identifiers owns ordinals 0..N-1. Each ordinal has one suffix
that reads like a product code, ``JXDY2106023``: four letters (the product line), ``YYMM``
(the batch month, 2018-01 .. 2021-11) and a three-digit serial. With 47 months and 1,000
serials per month a product line holds 47,000 identifiers; ordinal o is serial ``o % 1000``,
month ``o // 1000 % 47``, line ``o // 47000``, and the line number is spread over the 26^4
four-letter codes by an affine permutation drawn per enterprise from (seed, prefix), so
enterprises' codes differ. ``suffix``/``ordinal`` are inverse bijections between 0..N-1 and
the canonical suffixes; any other text (wrong shape, month out of range, lower case in a
case-sensitive node, ordinal >= N) decodes to None: not found.

A record is a pure function of (prefix, ordinal, seed, template): index 1 its URL, indexes
2.. one value per template field (``resolver.templates.values``), 100 HS_ADMIN naming the
prefix's admin group; timestamps are the batch month's first day. O(1) per resolve: nothing
is tabulated per identifier. A resolve makes the record's rows (one generated function per
template, ``templates.compile_fields``) and renders its answer from them (``SyntheticAnswer``);
the stored bytes, laid out as ``records.encode`` lays them out, are made only when asked for.

Counts: ``spread`` gives each enterprise ``minimum`` plus a share of the rest proportional
to a lognormal weight (mu 0, sigma ``SIGMA``), rounded by largest remainder so they sum
exactly to the total (guangzhou-2021: 6,990,000,000 over 4,065 enterprises).

Pure: no I/O; the RNG is a parameter or seeded from the arguments.
"""
from __future__ import annotations

import calendar
import hashlib
import random
import re
from dataclasses import dataclass
from typing import Iterable

import msgpack

from resolver import records
from resolver.templates import Template, compile_fields

__all__ = ["CAPACITY", "GUANGZHOU_2021_IDENTIFIERS", "MINIMUM", "SIGMA", "EnterprisePopulation",
           "Member", "Population", "Record", "SyntheticAnswer", "spread"]

GUANGZHOU_2021_IDENTIFIERS = 6_990_000_000  # registered at the Guangzhou node, Nov 2021
SIGMA = 2.0  # lognormal sigma of enterprise weights: the top 1 % hold about 40 %
MINIMUM = 1_000  # identifiers every enterprise has at least
SERIALS = 1000
FIRST_YEAR, MONTHS = 2018, 47  # batch months 2018-01 .. 2021-11
LINES = 26 ** 4
CAPACITY = LINES * MONTHS * SERIALS  # 21.5 billion suffixes per enterprise
_MASK = (1 << 64) - 1
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_YYMM = [f"{(FIRST_YEAR + m // 12) % 100:02d}{m % 12 + 1:02d}" for m in range(MONTHS)]
_MONTH_OF = {yymm.encode(): m for m, yymm in enumerate(_YYMM)}
_STAMP = [calendar.timegm((FIRST_YEAR + m // 12, m % 12 + 1, 1, 0, 0, 0)) for m in range(MONTHS)]
_TTL, _PERMS = records.DEFAULT_TTL, records.DEFAULT_PERMS
_SHAPE = re.compile(rb"[A-Z]{4}[0-9]{7}")  # the shape of every suffix (then: its month)
_AAAA = ((65 * 26 + 65) * 26 + 65) * 26 + 65  # "AAAA" read as base-26 digits offset by "A"
_SERIAL = tuple(f"{s:03d}" for s in range(SERIALS))
_pack = msgpack.Packer(use_bin_type=True).pack  # records.encode's msgpack, one packer reused
_TAIL = tuple(_pack(_TTL) + _pack(stamp) + _pack(_PERMS) for stamp in _STAMP)  # by month


def spread(rng: random.Random, total: int, bins: int, minimum: int, sigma: float) -> list[int]:
    """*total* over *bins*, each at least *minimum*, the rest by lognormal weights, exact sum."""
    if bins <= 0 or bins * minimum > total:
        raise ValueError(f"cannot give {bins} enterprises at least {minimum} of {total}")
    weights = [rng.lognormvariate(0.0, sigma) for _ in range(bins)]
    extra = total - bins * minimum
    wsum = sum(weights)
    raw = [w / wsum * extra for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(bins), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: extra - sum(counts)]:
        counts[i] += 1
    return [minimum + c for c in counts]


class EnterprisePopulation:
    """One enterprise's population: its suffix codec and its records."""

    __slots__ = ("prefix", "count", "template", "seed", "_a", "_b", "_ainv", "_base", "_head",
                 "_url", "_fields", "_rows", "_admin_value", "_admin",
                 "_lines")

    def __init__(self, prefix: str, count: int, template: Template, seed: int) -> None:
        if not 0 <= count <= CAPACITY:
            raise ValueError(f"{prefix}: a population holds 0..{CAPACITY} identifiers")
        self.prefix, self.count, self.template, self.seed = prefix, count, template, seed
        digest = hashlib.sha256(f"{seed}:{prefix}".encode()).digest()
        self._base = int.from_bytes(digest[:8], "big")
        a = int.from_bytes(digest[8:12], "big") % LINES | 1
        while a % 13 == 0:
            a += 2
        self._a, self._b = a, int.from_bytes(digest[12:16], "big") % LINES
        self._ainv = pow(a, -1, LINES)
        self._head = f"{prefix}/"
        self._url = f"https://ex.com/{prefix}/"
        # the stored layout (records.encode) in pre-packed pieces: [text, rows], each row
        # [index, type, format, value, ttl, timestamp, perms]; ttl..perms by month (_TAIL)
        self._fields = compile_fields(template)
        self._rows = (b"\x92", bytes([0x90 | (len(template.fields) + 2)]),
                      b"\x97" + _pack(1) + _pack("URL") + _pack("string"),
                      tuple(b"\x97" + _pack(i + 2) + _pack(f.name) + _pack("string")
                            for i, f in enumerate(template.fields)))
        # shared by every row made here: readers of rows never change them
        self._admin_value = {"handle": f"0.NA/{prefix}", "index": 200,
                             "permissions": "111111111111"}
        self._admin = b"\x97" + _pack(100) + _pack("HS_ADMIN") + _pack("admin") + _pack(
            self._admin_value)
        self._lines: dict[int, str] = {}

    # ------------------------------------------------------------ codec
    def _line_code(self, line: int) -> str:
        code = self._lines.get(line)
        if code is None:
            n = (self._a * line + self._b) % LINES
            code = "".join(_LETTERS[n // 26 ** k % 26] for k in (3, 2, 1, 0))
            if len(self._lines) < 4096:
                self._lines[line] = code
        return code

    def suffix(self, ordinal: int) -> str:
        """The suffix of *ordinal* (0 <= ordinal < count; ValueError otherwise)."""
        if not 0 <= ordinal < self.count:
            raise ValueError(f"{self.prefix}: ordinal {ordinal} outside 0..{self.count - 1}")
        rest, serial = divmod(ordinal, SERIALS)
        line, month = divmod(rest, MONTHS)
        return self._line_code(line) + _YYMM[month] + _SERIAL[serial]

    def ordinal(self, suffix: bytes | str) -> int | None:
        """The ordinal whose suffix is *suffix*, or None (not one of this population's)."""
        if isinstance(suffix, str):
            suffix = suffix.encode("utf-8", "replace")
        month = _MONTH_OF.get(suffix[4:8]) if _SHAPE.fullmatch(suffix) else None
        if month is None:
            return None
        c0, c1, c2, c3 = suffix[:4]
        line = ((((c0 * 26 + c1) * 26 + c2) * 26 + c3 - _AAAA) - self._b) * self._ainv % LINES
        ordinal = (line * MONTHS + month) * SERIALS + int(suffix[8:])
        return ordinal if ordinal < self.count else None

    # ------------------------------------------------------------ records
    def record(self, ordinal: int) -> bytes:
        """The stored-record bytes (``records.encode`` layout) of *ordinal* (valid ordinals)."""
        rest, serial = divmod(ordinal, SERIALS)
        line, month = divmod(rest, MONTHS)
        return Record(self, ordinal, self._line_code(line), month, _SERIAL[serial]).data()

    def lookup(self, suffix: bytes) -> Record | None:
        """The record of the identifier with this suffix (store-key bytes), or None."""
        month = _MONTH_OF.get(suffix[4:8])
        if month is None or not _SHAPE.fullmatch(suffix):
            return None
        c0, c1, c2, c3 = suffix[:4]
        line = ((((c0 * 26 + c1) * 26 + c2) * 26 + c3 - _AAAA) - self._b) * self._ainv % LINES
        serial = suffix[8:].decode()
        ordinal = (line * MONTHS + month) * SERIALS + int(serial)
        if ordinal >= self.count:
            return None
        return Record(self, ordinal, suffix[:4].decode(), month, serial)


class Record:
    """One synthetic record: its rows made once (``records.decode_rows``'s shape), its stored
    bytes on demand."""

    __slots__ = ("ent", "month", "text", "rows")

    def __init__(self, ent: EnterprisePopulation, ordinal: int, product: str, month: int,
                 serial: str) -> None:
        batch, stamp = _YYMM[month], _STAMP[month]
        sfx = product + batch + serial
        url = ent._url + sfx
        self.ent, self.month, self.text = ent, month, ent._head + sfx
        h = (ent._base ^ ordinal) * 0x9E3779B97F4A7C15 & _MASK  # a multiplicative hash
        self.rows = [[1, "URL", "string", url, _TTL, stamp, _PERMS],
                     *ent._fields(h, product, batch, serial, url, stamp),
                     [100, "HS_ADMIN", "admin", ent._admin_value, _TTL, stamp, _PERMS]]

    def data(self) -> bytes:
        """The stored-record bytes (``records.encode``'s layout), from pre-packed pieces."""
        tail, ent, rows = _TAIL[self.month], self.ent, self.rows
        top, nrows, url_row, heads = ent._rows
        out = [top, _pack(self.text), nrows, url_row, _pack(rows[0][3]), tail]
        for head, row in zip(heads, rows[1:-1]):
            out += (head, _pack(row[3]), tail)
        out += (ent._admin, tail)
        return b"".join(out)


class SyntheticAnswer(records.Answer):
    """A synthetic record as a node answers it (``records.Answer``), rendered from its rows;
    its stored bytes are made only when asked for (an anonymous GET never asks)."""

    __slots__ = ("record",)

    def __init__(self, record: Record) -> None:
        self.record = record
        self.render(record.rows)

    @property
    def data(self) -> bytes:  # type: ignore[override]
        return self.record.data()


@dataclass(frozen=True, slots=True)
class Member:
    """What a node needs to know of one enterprise to serve its population."""
    prefix: str
    count: int
    template: Template


class Population:
    """The populations of one node's enterprises, found by store key (``identifiers.make_key``)."""

    def __init__(self, members: Iterable[Member], seed: int, *, case_sensitive: bool = False
                 ) -> None:
        self.by_group: dict[bytes, EnterprisePopulation] = {}
        for m in members:
            if m.count:
                group = m.prefix.encode() if case_sensitive else m.prefix.encode().upper()
                self.by_group[group] = EnterprisePopulation(m.prefix, m.count, m.template, seed)

    def __bool__(self) -> bool:
        return bool(self.by_group)

    @property
    def total(self) -> int:
        return sum(e.count for e in self.by_group.values())

    def of(self, group: bytes) -> EnterprisePopulation | None:
        return self.by_group.get(group)

    def lookup(self, key: bytes) -> Record | None:
        """The record of the identifier with store key *key*; None: not one of them."""
        group, _, suffix = key.partition(b"/")
        ent = self.by_group.get(group)
        return None if ent is None else ent.lookup(suffix)
