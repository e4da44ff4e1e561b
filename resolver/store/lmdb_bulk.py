"""Bulk loading of an LMDB store (``LmdbStore.bulk_write``, used by ``idsim import`` on a
stopped node's store): one large transaction per call, synchronously.

Keys sorted and above every stored key go in with ``MDB_APPEND`` (no tree search, pages
filled completely), others are put one by one; the group counts are updated once per
transaction, and an optional checkpoint (in the ``imports`` database) is written in the same
transaction, so a record, its count and the position the import reached are committed
together or not at all. Not logged: the log gets a new epoch, which makes every mirror dump
again (``resolver.store.lmdb``'s transaction log).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Sequence

from resolver.store.base import group_of

if TYPE_CHECKING:
    from resolver.store.lmdb import LmdbStore


def imports(store: "LmdbStore"):
    return store.env.open_db(b"imports")  # created on first use; older stores lack it


def checkpoint(store: "LmdbStore", name: bytes) -> bytes | None:
    """What ``bulk_write`` last committed under ``name``, or None."""
    db = imports(store)
    with store.env.begin() as txn:
        return txn.get(name, db=db)


def bulk_write(store: "LmdbStore", items: Sequence[tuple[bytes, bytes]], *,
               checkpoint: tuple[bytes, bytes] | None = None,
               before_commit: Callable[[], None] | None = None) -> int:
    """Write ``items`` (sorted by key, keys distinct) and ``checkpoint`` (name, value) in
    one transaction, synchronously; returns how many keys were new. Not for a store a
    node is serving from (its group commit runs beside it). ``before_commit`` runs inside
    the transaction (tests raise there: then nothing of it is written)."""
    from resolver.store.lmdb import _COUNT, EPOCH
    deltas: dict[bytes, int] = {}
    done = imports(store) if checkpoint else None
    records, counts = store._records, store._counts
    with store.env.begin(write=True) as txn:
        cur = txn.cursor(db=records)
        last = cur.key() if cur.last() else b""
        if items and items[0][0] > last:  # all above the tree: append, no searches
            consumed, added = cur.putmulti(items, append=True)
            if added != len(items):
                raise ValueError("bulk_write needs keys sorted and distinct")
            first, final = group_of(items[0][0]), group_of(items[-1][0])
            if first == final:  # sorted keys between two of one group are of that group
                deltas[first] = added
            else:
                for key, _ in items:
                    g = group_of(key)
                    deltas[g] = deltas.get(g, 0) + 1
        else:
            for key, value in items:
                if txn.put(key, value, db=records, overwrite=False):
                    g = group_of(key)
                    deltas[g] = deltas.get(g, 0) + 1
                else:
                    txn.put(key, value, db=records)
        for g, d in deltas.items():
            raw = txn.get(g, db=counts)
            txn.put(g, _COUNT.pack((_COUNT.unpack(raw)[0] if raw else 0) + d), db=counts)
        if checkpoint:
            txn.put(checkpoint[0], checkpoint[1], db=done)
        txn.put(EPOCH, os.urandom(8), db=store._meta)  # not logged: mirrors dump again
        if before_commit:
            before_commit()
    store.commits += 1
    return sum(deltas.values())
