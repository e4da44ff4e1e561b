"""Stored writes on top of a secondary node's synthetic population (``resolver.population``).

What a key resolves to: the stored record if there is one; a *tombstone* (an empty stored
value) is not found; with nothing stored, the population's record if the key is one of its
identifiers. So the stored-record path reads the store once, as without a population, and the
synthetic path once too (a miss) before computing the record.

Registering an identifier of the population stores its record over it and a *shadow*
(``SHADOW + key``, group ``0.DEL.<prefix>``, holding the ordinal, 8 bytes big-endian);
deleting one stores a tombstone at the key, the shadow, and a *tomb mark* (``TOMB + key``,
group ``0.TOMB.<prefix>``); registering it again replaces the tombstone and drops the mark.
No client can write those groups: no node homes them. They are never read to resolve; they
keep the counts exact with the counts the store keeps per group (one lookup each):

    identifiers under a prefix = population − shadows + stored − tombstones

Listing pages through the population's ordinals first, in ordinal order, shadowed ones
skipped, then the stored records in key order, tombstones skipped: a stable order while
nothing is written.

Invariants: a shadow exists exactly for each ordinal of the population with a stored record
or a tombstone; a tomb mark exactly for each tombstone.
"""
from __future__ import annotations

from typing import Callable

from resolver.population import Population, Record
from resolver.store import RecordStore

SHADOW = b"0.DEL."  # shadow keys: SHADOW + the identifier's key
TOMB = b"0.TOMB."  # tomb marks: TOMB + the identifier's key
TOMBSTONE = b""  # the stored value of a deleted identifier of the population
SCAN_CHUNK = 10_000  # rows per store scan when paging: how the work is cut, not a tunable


def synthetic(population: Population | None, key: bytes, stored: bytes | None
              ) -> Record | None:
    """The population's record of *key* when nothing is *stored* there (None), else None
    (a stored record is the answer; a tombstone, b"", means not found)."""
    if stored is not None or not population:
        return None
    return population.lookup(key)


def _shadow(population: Population | None, key: bytes) -> tuple[bytes, bytes] | None:
    if not population:
        return None
    group, _, suffix = key.partition(b"/")
    ent = population.of(group)
    ordinal = None if ent is None else ent.ordinal(suffix)
    return None if ordinal is None else (SHADOW + key, ordinal.to_bytes(8, "big"))


def on_write(population: Population | None, key: bytes, stored: bytes | None
             ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """(entries to store with a record at *key*, a key to delete after) given what is stored."""
    shadow = _shadow(population, key)
    return ([shadow] if shadow else []), (TOMB + key if stored == TOMBSTONE else None)


def on_delete(population: Population | None, key: bytes, stored: bytes | None
              ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """(entries to store, key to delete) that delete the identifier *key*."""
    shadow = _shadow(population, key)
    if shadow is None:
        return [], key
    return [(key, TOMBSTONE), shadow, (TOMB + key, TOMBSTONE)], None


def identifiers(population: Population | None, groups: dict) -> int:
    """Identifiers this node serves: population − shadows + stored − tombstones (``0.NA``
    excluded)."""
    total = population.total if population else 0
    for group, n in groups.items():
        if group.upper() == b"0.NA":
            continue
        total += -n if group.startswith((SHADOW, TOMB)) else n
    return total


def _scan(store: RecordStore, prefix: bytes, skip: int, limit: int) -> list[bytes]:
    """Stored values under *prefix* in key order, tombstones skipped, from *skip* on."""
    rows: list[bytes] = []
    after = None
    while len(rows) < skip + limit:
        chunk = store.scan(prefix, after=after, limit=min(SCAN_CHUNK, skip + limit))
        if not chunk:
            break
        rows.extend(v for _, v in chunk if v != TOMBSTONE)
        after = chunk[-1][0]
    return rows[skip:skip + limit]


def _shadows(store: RecordStore, group: bytes) -> list[int]:
    """The shadowed ordinals of *group*, sorted."""
    prefix, out, after = SHADOW + group + b"/", [], None
    while chunk := store.scan(prefix, after=after, limit=SCAN_CHUNK):
        out.extend(int.from_bytes(v, "big") for _, v in chunk)
        after = chunk[-1][0]
    return sorted(out)


def page(store: RecordStore, population: Population | None, group: bytes, offset: int,
         limit: int, text_of: Callable[[bytes], str]) -> tuple[int, list[str]]:
    """(total, up to *limit* handle texts from *offset*) under *group*, in the order above;
    ``text_of`` renders a stored record's bytes as its handle text."""
    ent = population.of(group) if population else None
    shadows = _shadows(store, group) if ent is not None else []
    visible = ent.count - len(shadows) if ent is not None else 0
    total = visible + store.count(group) - store.count(TOMB + group)
    out: list[str] = []
    if offset < visible:
        ordinal, j = offset, 0
        while j < len(shadows) and shadows[j] <= ordinal:  # the offset-th unshadowed ordinal
            ordinal, j = ordinal + 1, j + 1
        while len(out) < limit and ordinal < ent.count:
            if j < len(shadows) and shadows[j] == ordinal:
                j += 1
            else:
                out.append(f"{ent.prefix}/{ent.suffix(ordinal)}")
            ordinal += 1
    rest = limit - len(out)
    if rest > 0:
        rows = _scan(store, group + b"/", max(0, offset - visible), rest)
        out.extend(text_of(v) for v in rows)
    return total, out
