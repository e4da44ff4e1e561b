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
        self._busy: dict[bytes, list[asyncio.Future] | None] = {}  # held key -> its waiters

    def hold(self, keys: Iterable[bytes]) -> "_Held":
        return _Held(self._busy, set(keys))


class _Held:
    __slots__ = ("busy", "keys")

    def __init__(self, busy: dict[bytes, list[asyncio.Future] | None], keys: set[bytes]) -> None:
        self.busy = busy
        self.keys = keys

    async def __aenter__(self) -> None:
        busy, keys = self.busy, self.keys
        while not busy.keys().isdisjoint(keys):  # one C pass over a batch's thousands of keys
            taken = next(k for k in keys if k in busy)
            waiters = busy[taken]
            if waiters is None:
                waiters = busy[taken] = []
            fut = asyncio.get_running_loop().create_future()
            waiters.append(fut)
            await fut
        busy.update(dict.fromkeys(keys))  # held; a waiter's list is made when one comes

    async def __aexit__(self, *exc) -> None:
        pop = self.busy.pop
        for k in self.keys:
            waiters = pop(k)
            if waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
