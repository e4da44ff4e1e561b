"""LMDB store: the embedded, durable default.

Reads run on the event loop thread (a B+tree lookup in a memory map: ~2 µs, no copy of the
database in the Python heap, so memory stays file-backed at any size).

Writes are group-committed: the writes of one event-loop iteration join a queue together;
one long-lived writer thread (started at the first write, stopped by ``close``) takes
everything queued, applies it in one transaction and commits with fsync; then every write in
it is acknowledged, with one ``call_soon_threadsafe`` per commit (and event loop) resolving
all its futures. While a commit's fsync runs, new writes queue for the next one, so the
commit rate is bounded by fsync latency but the write rate is not. Gathering: after a commit
of several writes, the next one waits (at most ``gather`` s, ``[store] commit_gather``) until
it holds as many writes as were in flight (that commit's, and those queued meanwhile): the
clients just answered come back into it, instead of every other commit carrying only half
of them (closed-loop clients). A lone write never waits. An acknowledged write is
on disk; a commit that fails fails every write in it, and nothing of it is stored. ``close``
waits for every queued write.

Bulk loading (``bulk_write``, used by ``idsim import`` on a stopped node's store) writes one
large transaction per call (``resolver.store.lmdb_bulk``).

Transaction log (for mirrors, ``resolver.replication``): every committed change (a put's key
and new value, or a delete's key) is appended to the ``txlog`` database under the next
sequence number IN THE SAME TRANSACTION as the change, so a change and its log entry are
durable together or not at all. Sequence numbers come from the database (``meta`` holds the
last one, read and written inside the write transaction, which LMDB serialises across
processes), so several processes committing to one store never reuse one. The log keeps at
most ``log_entries`` entries, none older than ``log_age`` seconds (trimmed in the commit that
appends). ``bulk_write`` does not log: it gives the log a new epoch, which makes every mirror
dump again. A mirror's own store records how far it followed (``apply``'s ``follow`` marker)
in the transaction that applies the changes.
"""
from __future__ import annotations

import asyncio
import os
import queue
import struct
import threading
import time
from typing import Callable, Collection, Sequence

import lmdb
import msgpack

from resolver.config import ReplicationConfig, StoreConfig
from resolver.store import lmdb_bulk
from resolver.store.base import LogRead, group_of

_COUNT = struct.Struct("<q")
_SEQ = struct.Struct(">Q")  # txlog keys: big-endian, so key order is sequence order
_TIME = struct.Struct("<d")  # a txlog value: commit time, then msgpack [key, value or None]
_PACK = msgpack.Packer().pack  # a txlog entry's [key, value]: one packer reused (writer thread)
EPOCH, LAST_SEQ, FOLLOW = b"log_epoch", b"log_seq", b"follow"  # keys of the meta database
# one queued write: (puts, delete key or None, future, keys that must hold no record); a
# mirror's ``apply`` is queued as (None, (changes, follow, clear), future, ()); None: stop
_Op = tuple["Sequence[tuple[bytes, bytes]] | None", object, asyncio.Future, "Collection[bytes]"]


class LmdbStore:
    def __init__(self, path: str, *, map_size_gib: float, sync: bool = True,
                 log: ReplicationConfig = ReplicationConfig(),
                 clock: Callable[[], float] = time.time,
                 gather: float = StoreConfig().commit_gather) -> None:
        os.makedirs(path, exist_ok=True)
        self.url = f"lmdb:{path}"
        self.path = path
        self.env = lmdb.open(path, map_size=int(map_size_gib * 2**30), max_dbs=8, sync=sync,
                             metasync=sync, readahead=False, max_readers=1024, lock=True)
        self._records = self.env.open_db(b"records")
        self._counts = self.env.open_db(b"counts")
        self._txlog = self.env.open_db(b"txlog")
        self._meta = self.env.open_db(b"meta")
        self.log_entries, self.log_age, self.clock = max(1, log.log_entries), log.log_age, clock
        self._signal: asyncio.Event | None = None
        with self.env.begin(write=True) as txn:  # a log epoch from the store's first opening
            txn.put(EPOCH, os.urandom(8), db=self._meta, overwrite=False)
        self._pending: list[_Op] = []  # this loop iteration's writes, not yet queued
        self._queue: queue.SimpleQueue[list[_Op] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self.commits = 0  # transactions committed (for tests and stats)
        self.gather, self._flushed = gather, 0  # writes handed to the writer, ever

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(db=self._records) as txn:
            return txn.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """``get`` of each key, in order, from one read transaction (one snapshot)."""
        with self.env.begin(db=self._records) as txn:
            get = txn.get
            return [get(k) for k in keys]

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
    async def put_many(self, items: Sequence[tuple[bytes, bytes]],
                       absent: Collection[bytes] = ()) -> set[bytes]:
        """Store ``items`` durably; the keys of ``absent`` that hold a record at commit time
        (another process created them since they were read) are returned and not written."""
        if not items:
            return set()
        return await self._submit(items, None, absent)

    async def delete(self, key: bytes) -> bool:
        return await self._submit((), key)

    def _submit(self, puts, delete, absent: Collection[bytes] = ()) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_thread, name="lmdb-commit",
                                            daemon=True)
            self._writer.start()
        if not self._pending:  # the writes of this loop iteration go to the writer together
            loop.call_soon(self._flush)
        self._pending.append((puts, delete, fut, absent))
        return fut

    def _flush(self) -> None:
        if self._pending:
            ops, self._pending = self._pending, []
            self._flushed += len(ops)
            self._queue.put(ops)

    def _write_thread(self) -> None:
        """The writer: take everything queued (gathered: module docstring), commit it (each
        ``apply`` alone), answer."""
        get, get_now, Empty = self._queue.get, self._queue.get_nowait, queue.Empty
        stop, taken, in_flight = False, 0, 0
        while not stop:
            queued = [get()]
            while queued[-1] is not None:
                try:
                    queued.append(get_now())
                except Empty:
                    break
            have = sum(len(ops) for ops in queued if ops is not None)
            deadline = time.monotonic() + self.gather
            while in_flight > 1 and have < in_flight and queued[-1] is not None:
                try:
                    queued.append(get(timeout=max(0.0, deadline - time.monotonic())))
                except Empty:
                    break
                have += len(queued[-1] or ())
            if queued[-1] is None:
                queued.pop()
                stop = True
            batch = [op for ops in queued for op in ops]
            size, mark = len(batch), None
            taken += size
            while batch:
                if batch[0][0] is None:  # a mirror's apply: its own transaction
                    run, batch, commit = batch[:1], batch[1:], self._apply_op
                else:
                    n = next((i for i, op in enumerate(batch) if op[0] is None), len(batch))
                    run, batch, commit = batch[:n], batch[n:], self._commit
                try:
                    results, error = commit(run), None
                except Exception as exc:  # the whole transaction failed: nothing was written
                    results, error = None, exc
                if mark is None:  # writes queued so far came during the commit, not after
                    mark = self._flushed  # an answer (which may bring the next write)
                self._answer(run, results, error)
            in_flight = size + (mark or taken) - taken  # just answered, and queued meanwhile

    def _answer(self, run: list[_Op], results: list | None, error: Exception | None) -> None:
        """Resolve ``run``'s futures on their loops: one wake-up per loop and commit."""
        loops: dict = {}
        for i, op in enumerate(run):
            loops.setdefault(op[2].get_loop(), []).append(i)
        for loop, which in loops.items():
            try:
                loop.call_soon_threadsafe(self._settle, [run[i][2] for i in which],
                                          None if results is None else [results[i] for i in which],
                                          error)
            except RuntimeError:  # that loop is closed: nobody waits for these
                pass

    def _settle(self, futures: list[asyncio.Future], results: list | None,
                error: Exception | None) -> None:
        for i, fut in enumerate(futures):
            if not fut.done():
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(results[i])
        if error is None:
            self._signal_commit()

    def _commit(self, batch: list[_Op]) -> list:
        deltas: dict[bytes, int] = {}
        results: list = []
        changes: list[tuple[bytes, bytes | None]] = []
        records = self._records
        with self.env.begin(write=True) as txn:
            get, replace = txn.get, txn.replace
            for puts, delete, _, absent in batch:
                taken = {k for k in absent if get(k, db=records)}  # b"": a tombstone
                if taken:
                    puts = [(k, v) for k, v in puts if k not in taken]
                for key, value in puts:  # _change's put, inlined: a batch has thousands
                    if replace(key, value, db=records) is None:
                        group = key.partition(b"/")[0]  # group_of
                        deltas[group] = deltas.get(group, 0) + 1
                changes += puts
                if delete is None:
                    results.append(taken)
                else:
                    existed = self._change(txn, delete, None, deltas)
                    if existed:
                        changes.append((delete, None))
                    results.append(existed)
            self._count(txn, deltas)
            self._append(txn, changes)
        self.commits += 1
        return results

    def _change(self, txn, key: bytes, value: bytes | None, deltas: dict[bytes, int]) -> bool:
        """Put (or, for None, delete) one key, counting it; True if the key existed before."""
        if value is None:
            existed = txn.delete(key, db=self._records)
            if existed:
                deltas[group_of(key)] = deltas.get(group_of(key), 0) - 1
            return existed
        if txn.replace(key, value, db=self._records) is None:
            deltas[group_of(key)] = deltas.get(group_of(key), 0) + 1
            return False
        return True

    def _count(self, txn, deltas: dict[bytes, int]) -> None:
        for g, d in deltas.items():
            if d:
                raw = txn.get(g, db=self._counts)
                n = (_COUNT.unpack(raw)[0] if raw else 0) + d
                if n > 0:
                    txn.put(g, _COUNT.pack(n), db=self._counts)
                else:
                    txn.delete(g, db=self._counts)

    # ------------------------------------------------------------ transaction log
    def _append(self, txn, changes: list[tuple[bytes, bytes | None]]) -> None:
        """Log ``changes`` in ``txn`` under the next sequence numbers, then trim the log."""
        if not changes:
            return
        now = self.clock()
        raw = txn.get(LAST_SEQ, db=self._meta)
        seq = _SEQ.unpack(raw)[0] if raw else 0
        stamp, pack, key_of = _TIME.pack(now), _PACK, _SEQ.pack
        txn.cursor(db=self._txlog).putmulti(
            [(key_of(n), stamp + pack([key, value])) for n, (key, value) in
             enumerate(changes, seq + 1)], append=True)
        seq += len(changes)
        txn.put(LAST_SEQ, _SEQ.pack(seq), db=self._meta)
        excess = txn.stat(self._txlog)["entries"] - self.log_entries
        cutoff = now - self.log_age
        cur = txn.cursor(db=self._txlog)
        if not cur.first():
            return
        while cur.key() and cur.key() != _SEQ.pack(seq) and (
                excess > 0 or _TIME.unpack_from(cur.value())[0] < cutoff):
            cur.delete()  # moves to the next entry
            excess -= 1

    def log_read(self, since: int, max_bytes: int) -> LogRead:
        """The log's epoch and span, and the entries after ``since`` (up to about
        ``max_bytes`` of keys and values, at least one), from one snapshot."""
        entries = []
        with self.env.begin() as txn:
            epoch = txn.get(EPOCH, db=self._meta) or b""
            raw = txn.get(LAST_SEQ, db=self._meta)
            last = _SEQ.unpack(raw)[0] if raw else 0
            cur = txn.cursor(db=self._txlog)
            first = _SEQ.unpack(cur.key())[0] if cur.first() else last + 1
            if since < last and cur.set_range(_SEQ.pack(since + 1)):
                size = 0
                for key, value in cur:
                    if size >= max_bytes and entries:
                        break
                    k, v = msgpack.unpackb(value[_TIME.size:])
                    entries.append((_SEQ.unpack(key)[0], _TIME.unpack_from(value)[0], k, v))
                    size += len(value)
        return LogRead(epoch, first, last, entries)

    def commit_signal(self) -> asyncio.Event:
        """An event set at this process's next commit (other processes' commits are seen
        only by reading ``log_read`` again)."""
        if self._signal is None:
            self._signal = asyncio.Event()
        return self._signal

    def _signal_commit(self) -> None:
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.set()

    def following(self) -> bytes | None:
        """The ``follow`` marker the last ``apply`` wrote (a mirror's position), or None."""
        with self.env.begin(db=self._meta) as txn:
            return txn.get(FOLLOW)

    async def apply(self, changes: Sequence[tuple[bytes, bytes | None]], follow: bytes, *,
                    clear: bool = False) -> None:
        """A mirror's write: (with ``clear``, first drop every record), apply ``changes``
        (None: delete) and store ``follow`` in one durable transaction."""
        await self._submit(None, (changes, follow, clear))

    def _apply_op(self, run: list[_Op]) -> list:
        self._apply(*run[0][1])
        return [None]

    def _apply(self, changes, follow: bytes, clear: bool) -> None:
        deltas: dict[bytes, int] = {}
        done: list[tuple[bytes, bytes | None]] = []
        with self.env.begin(write=True) as txn:
            if clear:  # a new dump: nothing of before stays; our own followers dump again
                txn.drop(self._records, delete=False)
                txn.drop(self._counts, delete=False)
                txn.put(EPOCH, os.urandom(8), db=self._meta)
            for key, value in changes:
                if self._change(txn, key, value, deltas) or value is not None:
                    done.append((key, value))
            self._count(txn, deltas)
            self._append(txn, done)
            txn.put(FOLLOW, follow, db=self._meta)
        self.commits += 1

    # ------------------------------------------------------------ bulk loading
    def checkpoint(self, name: bytes) -> bytes | None:
        """What ``bulk_write`` last committed under ``name``, or None."""
        return lmdb_bulk.checkpoint(self, name)

    def bulk_write(self, items: Sequence[tuple[bytes, bytes]], *,
                   checkpoint: tuple[bytes, bytes] | None = None,
                   before_commit: Callable[[], None] | None = None) -> int:
        """``lmdb_bulk.bulk_write``: ``items`` in one transaction, synchronously."""
        return lmdb_bulk.bulk_write(self, items, checkpoint=checkpoint,
                                    before_commit=before_commit)

    async def close(self) -> None:
        """Wait for every queued write to be committed and answered, then close."""
        if self._writer is not None:
            self._flush()
            self._queue.put(None)
            # the last answers are scheduled on the loop before the join's own answer
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        self.env.close()
