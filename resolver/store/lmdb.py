"""LMDB store: the embedded, durable default.

Reads run on the event loop thread (a B+tree lookup in a memory map: ~2 µs, no copy of the
database in the Python heap, so memory stays file-backed at any size).

Writes are group-committed: each write joins a queue; one writer thread takes everything
queued, applies it in one transaction and commits with fsync; then every write in it is
acknowledged. While a commit's fsync runs, new writes queue for the next one, so the commit
rate is bounded by fsync latency but the write rate is not. An acknowledged write is on disk.

Bulk loading (``bulk_write``, used by ``idsim import`` on a stopped node's store) writes one
large transaction per call: keys sorted and above every stored key go in with ``MDB_APPEND``
(no tree search, pages filled completely), others are put one by one; the group counts are
updated once per transaction, and an optional checkpoint (in the ``imports`` database) is
written in the same transaction, so a record, its count and the position the import reached
are committed together or not at all.
"""
from __future__ import annotations

import asyncio
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import lmdb

from resolver.store.base import group_of

_COUNT = struct.Struct("<q")
# one queued write: (puts, delete key or None, future)
_Op = tuple[Sequence[tuple[bytes, bytes]], "bytes | None", asyncio.Future]


class LmdbStore:
    def __init__(self, path: str, *, map_size_gib: float, sync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self.url = f"lmdb:{path}"
        self.path = path
        self.env = lmdb.open(path, map_size=int(map_size_gib * 2**30), max_dbs=4, sync=sync,
                             metasync=sync, readahead=False, max_readers=1024, lock=True)
        self._records = self.env.open_db(b"records")
        self._counts = self.env.open_db(b"counts")
        self._queue: list[_Op] = []
        self._writer: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lmdb-commit")
        self.commits = 0  # transactions committed (for tests and stats)

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(db=self._records) as txn:
            return txn.get(key)

    def scan(self, prefix: bytes, *, after: bytes | None = None,
             limit: int = 100) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        with self.env.begin(db=self._records) as txn:
            cur = txn.cursor()
            if not cur.set_range(after + b"\0" if after is not None and after >= prefix else prefix):
                return out
            for key, value in cur:
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                out.append((key, value))
        return out

    def count(self, group: bytes | None = None) -> int:
        with self.env.begin() as txn:
            if group is None:
                return txn.stat(self._records)["entries"]
            raw = txn.get(group, db=self._counts)
            return _COUNT.unpack(raw)[0] if raw else 0

    def groups(self):
        with self.env.begin(db=self._counts) as txn:
            return [(k, _COUNT.unpack(v)[0]) for k, v in txn.cursor()]

    # ----------------------------------------------------------------- writes
    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if items:
            await self._submit(items, None)

    async def delete(self, key: bytes) -> bool:
        return await self._submit((), key)

    def _submit(self, puts, delete) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((puts, delete, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        return fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await loop.run_in_executor(self._pool, self._commit, batch)
            except Exception as exc:  # the whole transaction failed: nothing was written
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)

    def _commit(self, batch: list[_Op]) -> list:
        deltas: dict[bytes, int] = {}
        results: list = []
        with self.env.begin(write=True) as txn:
            for puts, delete, _ in batch:
                for key, value in puts:
                    if txn.replace(key, value, db=self._records) is None:
                        g = group_of(key)
                        deltas[g] = deltas.get(g, 0) + 1
                if delete is None:
                    results.append(None)
                else:
                    existed = txn.delete(delete, db=self._records)
                    if existed:
                        g = group_of(delete)
                        deltas[g] = deltas.get(g, 0) - 1
                    results.append(existed)
            for g, d in deltas.items():
                if d:
                    raw = txn.get(g, db=self._counts)
                    n = (_COUNT.unpack(raw)[0] if raw else 0) + d
                    if n > 0:
                        txn.put(g, _COUNT.pack(n), db=self._counts)
                    else:
                        txn.delete(g, db=self._counts)
        self.commits += 1
        return results

    # ------------------------------------------------------------ bulk loading
    def _imports(self):
        return self.env.open_db(b"imports")  # created on first use; older stores lack it

    def checkpoint(self, name: bytes) -> bytes | None:
        """What ``bulk_write`` last committed under ``name``, or None."""
        db = self._imports()
        with self.env.begin() as txn:
            return txn.get(name, db=db)

    def bulk_write(self, items: Sequence[tuple[bytes, bytes]], *,
                   checkpoint: tuple[bytes, bytes] | None = None,
                   before_commit: Callable[[], None] | None = None) -> int:
        """Write ``items`` (sorted by key, keys distinct) and ``checkpoint`` (name, value) in
        one transaction, synchronously; returns how many keys were new. Not for a store a
        node is serving from (its group commit runs beside it). ``before_commit`` runs inside
        the transaction (tests raise there: then nothing of it is written)."""
        deltas: dict[bytes, int] = {}
        imports = self._imports() if checkpoint else None
        with self.env.begin(write=True) as txn:
            cur = txn.cursor(db=self._records)
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
                    if txn.put(key, value, db=self._records, overwrite=False):
                        g = group_of(key)
                        deltas[g] = deltas.get(g, 0) + 1
                    else:
                        txn.put(key, value, db=self._records)
            for g, d in deltas.items():
                raw = txn.get(g, db=self._counts)
                txn.put(g, _COUNT.pack((_COUNT.unpack(raw)[0] if raw else 0) + d),
                        db=self._counts)
            if checkpoint:
                txn.put(checkpoint[0], checkpoint[1], db=imports)
            if before_commit:
                before_commit()
        self.commits += 1
        return sum(deltas.values())

    async def close(self) -> None:
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        self._pool.shutdown(wait=True)
        self.env.close()
