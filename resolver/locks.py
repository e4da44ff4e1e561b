"""All-or-nothing locks on sets of store keys, for the writes of one node.

A write holds every key it reads and writes: ``async with locks.hold(keys):``. Invariants: a
holder owns all its keys at once or none of them (it waits, holding nothing, while any is
taken), so two writes over overlapping keys never interleave and never deadlock; releasing
wakes every waiter on the released keys, which then retry. Single event loop; no I/O.
"""
from __future__ import annotations

import asyncio
from typing import Iterable


class KeyLocks:
    """``locks.hold(keys)`` is a plain async context object: on the register path an
    ``@asynccontextmanager`` generator cost more than the uncontended lock itself."""

    def __init__(self) -> None:
        self._busy: dict[bytes, list[asyncio.Future]] = {}

    def hold(self, keys: Iterable[bytes]) -> "_Held":
        return _Held(self._busy, set(keys))


class _Held:
    __slots__ = ("busy", "keys")

    def __init__(self, busy: dict[bytes, list[asyncio.Future]], keys: set[bytes]) -> None:
        self.busy = busy
        self.keys = keys

    async def __aenter__(self) -> None:
        busy = self.busy
        while (taken := next((k for k in self.keys if k in busy), None)) is not None:
            fut = asyncio.get_running_loop().create_future()
            busy[taken].append(fut)
            await fut
        for k in self.keys:
            busy[k] = []

    async def __aexit__(self, *exc) -> None:
        for k in self.keys:
            for fut in self.busy.pop(k):
                if not fut.done():
                    fut.set_result(None)
