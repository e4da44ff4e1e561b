"""Call deadlines of the RPC client (``rpc_wire.Deadlines``): one timer per connection, yet
each unanswered call fails exactly at its own deadline and an answered one never does. Time
is a ``FakeClock``; the last test runs a real client against a server that answers some calls
and not others."""
from __future__ import annotations

import asyncio

import pytest

from resolver.clock import FakeClock
from resolver.config import RpcConfig
from resolver.errors import HandleError, PeerUnavailable
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_wire import Deadlines


def timers(clock: FakeClock) -> int:
    return sum(1 for _, _, t in clock._timers if not t.cancelled)


async def test_each_call_fails_at_its_own_deadline_with_one_timer():
    clock = FakeClock()
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(clock, lambda what: PeerUnavailable(f"{what} timed out"))
    futs = []
    for i in range(5):  # calls made 0.25 s apart, each with 2 s to answer
        fut = loop.create_future()
        deadlines.watch(clock() + 2.0, fut, f"call{i}")
        futs.append(fut)
        clock.advance(0.25)
    assert timers(clock) == 1
    futs[1].set_result("answered")
    clock.advance(0.5)  # t = 1.75 after the first call: nothing is due
    assert not futs[0].done()
    clock.advance(0.25)  # t = 2.0: the first call is due, no other
    assert futs[0].done() and "call0 timed out" in str(futs[0].exception())
    assert not any(f.done() for f in futs[2:]) and futs[1].result() == "answered"
    clock.advance(0.25)  # t = 2.25: call1 answered, not failed; call2 due at 2.5
    assert not futs[2].done()
    clock.advance(0.25)
    assert futs[2].done() and not futs[3].done()
    clock.advance(0.5)
    assert all(f.done() for f in futs) and timers(clock) == 0 and len(deadlines) == 0


async def test_answered_calls_do_not_pile_up():
    clock = FakeClock()
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(clock, lambda what: PeerUnavailable(what))
    for _ in range(1000):
        fut = loop.create_future()
        deadlines.watch(clock() + 2.0, fut, "resolve")
        fut.set_result(b"")
    assert len(deadlines) == 1  # only the last, answered one is left until the next call
    deadlines.clear()
    assert timers(clock) == 0


@pytest.mark.timeout(30)
async def test_a_client_fails_only_the_call_left_unanswered():
    clock = FakeClock()
    hold = asyncio.Event()

    async def slow():
        await hold.wait()
        return "late"

    srv = await RpcServer({"fast": lambda x: x, "slow": slow}, clock=clock).start()
    async with RpcClient("127.0.0.1", srv.port, RpcConfig(timeout=2.0), clock=clock) as c:
        stuck = asyncio.ensure_future(c.call("slow"))
        assert await c.call("fast", 1) == 1
        clock.advance(1.0)
        assert await c.call("fast", 2) == 2  # a later call; its deadline is at t = 3
        clock.advance(1.0)  # t = 2: the slow call is due
        with pytest.raises(PeerUnavailable, match="did not answer slow within 2.0s"):
            await stuck
        assert await c.call("fast", 3) == 3 and not c._conn.pending
        hold.set()
    await srv.close()


@pytest.mark.timeout(30)
async def test_call_soon_answers_once_by_callback_as_call_would():
    """``RpcClient.call_soon`` (the recursive node's fast misses): each call's callback runs
    once, with the answer, the error the peer answered, the deadline's PeerUnavailable or the
    lost connection's; it sends nothing (False) where ``call`` would have to connect first."""
    clock = FakeClock()
    hold = asyncio.Event()

    async def slow():
        await hold.wait()
        return "late"

    def refuse():
        raise HandleError(100, "no")

    srv = await RpcServer({"echo": lambda x: x, "slow": slow, "refuse": refuse},
                          clock=clock).start()
    got: list[tuple[str, object, object]] = []
    arrived = asyncio.Event()
    timed: list[tuple[str, bool]] = []

    def done(name):
        def record(error, result):
            got.append((name, error, result))
            arrived.set()
        return record

    async def until(n: int) -> None:
        while len(got) < n:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 10)

    c = RpcClient("127.0.0.1", srv.port, RpcConfig(timeout=2.0), clock=clock)
    c.observer = lambda method, seconds, failed: timed.append((method, failed))
    try:
        assert not c.call_soon("echo", (1,), done("early"))  # not connected: nothing sent
        assert await c.call("echo", 0) == 0
        assert c.call_soon("echo", (1,), done("echo"))
        assert c.call_soon("refuse", (), done("refuse"))
        assert c.call_soon("slow", (), done("slow"))
        await until(2)
        assert got[0] == ("echo", None, 1)
        assert got[1][0] == "refuse" and got[1][1].code == 100 and got[1][2] is None
        clock.advance(2.0)  # the slow call's deadline
        await until(3)
        assert got[2][0] == "slow" and "did not answer slow" in str(got[2][1])
        assert c.call_soon("slow", (), done("lost"))
        await srv.close()  # the connection goes with a call pending
        await until(4)
        assert got[3][0] == "lost" and isinstance(got[3][1], PeerUnavailable)
        assert len(got) == 4 and not c._conn  # each callback ran once; nothing left pending
        assert ("echo", False) in timed and ("slow", True) in timed  # observed as call is
    finally:
        hold.set()
        await c.close()
