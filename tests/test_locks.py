"""``resolver.locks.KeyLocks``: a holder owns all its keys or none; overlapping holders take
turns, disjoint ones do not wait; release wakes the waiters. Ordered by events only."""
from __future__ import annotations

import asyncio

from resolver.locks import KeyLocks


async def test_overlapping_holders_take_turns_and_disjoint_ones_do_not_wait():
    locks = KeyLocks()
    order: list[str] = []
    inside, leave = asyncio.Event(), asyncio.Event()

    async def first():
        async with locks.hold([b"a", b"b", b"c"]):
            order.append("first in")
            inside.set()
            await leave.wait()
            order.append("first out")

    async def second():  # overlaps on b"c" only, keys in another order
        async with locks.hold([b"d", b"c"]):
            order.append("second in")

    async def third():  # shares nothing
        async with locks.hold([b"x"]):
            order.append("third in")

    one = asyncio.ensure_future(first())
    await inside.wait()
    two, three = asyncio.ensure_future(second()), asyncio.ensure_future(third())
    await three  # not held up by the first holder
    assert order == ["first in", "third in"]
    assert not two.done()
    leave.set()
    await asyncio.gather(one, two)
    assert order == ["first in", "third in", "first out", "second in"]
    async with locks.hold([b"a", b"b", b"c", b"d", b"x"]):  # all free again
        pass


async def test_every_waiter_on_a_released_key_gets_it_in_turn():
    locks = KeyLocks()
    held, leave = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def holder():
        async with locks.hold([b"k"]):
            held.set()
            await leave.wait()

    async def waiter(i: int):
        async with locks.hold([b"k", b"other%d" % i]):
            seen.append(i)

    h = asyncio.ensure_future(holder())
    await held.wait()
    waiters = [asyncio.ensure_future(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert not seen
    leave.set()
    await asyncio.gather(h, *waiters)
    assert sorted(seen) == list(range(5))
