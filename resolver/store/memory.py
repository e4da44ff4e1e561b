"""In-process store: a dict of bytes. For tests and throwaway clusters; nothing survives exit.

Scans sort the matching keys on each call (O(n log n)): fine for test-sized data, not for
listing millions of identifiers. Use ``lmdb:`` for anything large or durable.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from resolver.store.base import group_of


class MemoryStore:
    url = "memory:"

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._counts: Counter[bytes] = Counter()

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        data = self._data
        for key, value in items:
            if key not in data:
                self._counts[group_of(key)] += 1
            data[key] = value

    async def delete(self, key: bytes) -> bool:
        if self._data.pop(key, None) is None:
            return False
        group = group_of(key)
        self._counts[group] -= 1
        if not self._counts[group]:
            del self._counts[group]
        return True

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
