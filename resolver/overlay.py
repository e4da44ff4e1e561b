"""Stored writes on top of a secondary node's synthetic population (``resolver.population``).

What a key resolves to: the stored record if there is one; else, unless a *shadow* hides
it, the population's record; else nothing. A shadow is a store entry at ``SHADOW + key``
(its group ``0.DEL.<prefix>``, which no client can write: no node homes it) holding the
ordinal, 8 bytes big-endian. A node writes one whenever it stores or deletes an identifier
of the population: registering one stores the new record and a shadow (the stored record
wins), deleting one removes any stored record and keeps the shadow (a tombstone).

So under a prefix the identifiers are ``population + stored − shadows``, each a count the
store keeps per group (one lookup). Listing pages through the population's ordinals first,
in ordinal order, shadowed ones skipped, then the stored records in key order: a stable
order while nothing is written.

Invariants: a shadow exists only for an ordinal of the population; the stored-record path
(a hit) reads the store once, as without a population.
"""
from __future__ import annotations

from typing import Callable

from resolver.population import Population
from resolver.store import RecordStore

SHADOW = b"0.DEL."  # shadow keys: SHADOW + the identifier's key
SCAN_CHUNK = 10_000  # rows per store scan when paging: how the work is cut, not a tunable


def shadow_key(key: bytes) -> bytes:
    return SHADOW + key


def is_shadow_group(group: bytes) -> bool:
    return group.startswith(SHADOW)


def synthetic(store: RecordStore, population: Population | None, key: bytes) -> bytes | None:
    """The population's record of *key* unless shadowed; None when there is none."""
    if not population:
        return None
    data = population.lookup(key)
    if data is None or store.get(SHADOW + key) is not None:
        return None
    return data


def shadow_for(population: Population | None, key: bytes) -> tuple[bytes, bytes] | None:
    """The shadow entry to write with a write of *key*, if *key* is of the population."""
    if not population:
        return None
    group, _, suffix = key.partition(b"/")
    ent = population.of(group)
    ordinal = None if ent is None else ent.ordinal(suffix)
    return None if ordinal is None else (SHADOW + key, ordinal.to_bytes(8, "big"))


def identifiers(store: RecordStore, population: Population | None, groups: dict) -> int:
    """Identifiers this node serves: population + stored − shadows (``0.NA`` excluded)."""
    total = population.total if population else 0
    for group, n in groups.items():
        if group.upper() == b"0.NA":
            continue
        total += -n if is_shadow_group(group) else n
    return total


def _scan(store: RecordStore, prefix: bytes, skip: int, limit: int) -> list[tuple[bytes, bytes]]:
    rows, after = [], None
    while len(rows) < skip + limit:
        chunk = store.scan(prefix, after=after, limit=min(SCAN_CHUNK, skip + limit))
        if not chunk:
            break
        rows.extend(chunk)
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
    total = visible + store.count(group)
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
        out.extend(text_of(v) for _, v in rows)
    return total, out
