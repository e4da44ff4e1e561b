"""In-process store: a dict of bytes. For tests and throwaway clusters; nothing survives exit.

Scans sort the matching keys on each call (O(n log n)): fine for test-sized data, not for
listing millions of identifiers. Use ``lmdb:`` for anything large or durable.

It keeps a transaction log as the LMDB store does (``log_read``, ``apply``, ``following``,
``commit_signal``; see ``resolver.store.lmdb``), in memory, with a random epoch per store
object: a mirror can follow it within one process's life, and dumps again after a restart.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, deque
from typing import Callable, Collection, Sequence

from resolver.config import ReplicationConfig
from resolver.store.base import LogRead, group_of


class MemoryStore:
    url = "memory:"

    def __init__(self, *, log: ReplicationConfig = ReplicationConfig(),
                 clock: Callable[[], float] = time.time) -> None:
        self._data: dict[bytes, bytes] = {}
        self._counts: Counter[bytes] = Counter()
        self._log: deque[tuple[int, float, bytes, bytes | None]] = deque()
        self._seq = 0
        self._epoch = os.urandom(8)
        self._follow: bytes | None = None
        self._signal: asyncio.Event | None = None
        self.log_entries, self.log_age, self.clock = max(1, log.log_entries), log.log_age, clock

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        get = self._data.get
        return [get(k) for k in keys]

    async def put_many(self, items: Sequence[tuple[bytes, bytes]],
                       absent: Collection[bytes] = ()) -> set[bytes]:
        taken = {k for k in absent if self._data.get(k)}  # b"": a tombstone
        items = [(k, v) for k, v in items if k not in taken]
        for key, value in items:
            self._change(key, value)
        self._append(items)
        return taken

    async def delete(self, key: bytes) -> bool:
        if not self._change(key, None):
            return False
        self._append([(key, None)])
        return True

    def _change(self, key: bytes, value: bytes | None) -> bool:
        """Put (None: delete) one key, counting it; True if it existed."""
        group = group_of(key)
        if value is None:
            if self._data.pop(key, None) is None:
                return False
            self._counts[group] -= 1
            if not self._counts[group]:
                del self._counts[group]
            return True
        existed = key in self._data
        if not existed:
            self._counts[group] += 1
        self._data[key] = value
        return existed

    # ------------------------------------------------------------ transaction log
    def _append(self, changes: list[tuple[bytes, bytes | None]]) -> None:
        if not changes:
            return
        now = self.clock()
        for key, value in changes:
            self._seq += 1
            self._log.append((self._seq, now, key, value))
        while len(self._log) > 1 and (len(self._log) > self.log_entries
                                      or self._log[0][1] < now - self.log_age):
            self._log.popleft()
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.set()

    def log_read(self, since: int, max_bytes: int) -> LogRead:
        first = self._log[0][0] if self._log else self._seq + 1
        entries, size = [], 0
        for entry in list(self._log)[max(0, since + 1 - first):]:
            if size >= max_bytes and entries:
                break
            entries.append(entry)
            size += len(entry[2]) + len(entry[3] or b"")
        return LogRead(self._epoch, first, self._seq, entries)

    def commit_signal(self) -> asyncio.Event:
        if self._signal is None:
            self._signal = asyncio.Event()
        return self._signal

    def following(self) -> bytes | None:
        return self._follow

    async def apply(self, changes: Sequence[tuple[bytes, bytes | None]], follow: bytes, *,
                    clear: bool = False) -> None:
        if clear:
            self._data.clear()
            self._counts.clear()
            self._epoch = os.urandom(8)
        done = [(k, v) for k, v in changes if self._change(k, v) or v is not None]
        self._follow = follow
        self._append(done)

    # ------------------------------------------------------------ reads
    def scan(self, prefix: bytes, *, after: bytes | None = None,
             limit: int = 100) -> list[tuple[bytes, bytes]]:
        keys = sorted(k for k in self._data if k.startswith(prefix) and (after is None or k > after))
        return [(k, self._data[k]) for k in keys[:limit]]

    def count(self, group: bytes | None = None) -> int:
        return len(self._data) if group is None else self._counts.get(group, 0)

    def groups(self):
        return list(self._counts.items())

    async def close(self) -> None:
        pass
