"""The recursive node's misses answered by the HTTP fast path (``resolver.fast_miss``) as a
client sees them: the same bytes and counters as aiohttp's path, requests behind a pending miss
answered in order, one upstream call for identical questions, a client that goes away harming
nobody, and the peer's failures answered as ``resolve`` answers them.

Calls to the secondary are held where a test must order events: ``Held`` wraps the recursive
node's ``peer`` and keeps each ``call_soon`` until the test releases it (no sleeps).
"""
from __future__ import annotations

import asyncio
import re

from network_fixtures import net  # noqa: F401 (a fixture)
from test_fast_http import arrivals, exchange, get, node_counters, serve_pair, target  # noqa: F401
from test_failover import Calls, serve_copy, with_mirror
from test_network import ENT, demo_id, rpc_server_of

from resolver.rpc_auth import Method

NOPE = f"{ENT}/NO-SUCH-FAST-MISS"


def counters_moved(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


class Held:
    """The recursive node's ``peer`` with each ``call_soon`` kept until ``release``."""

    def __init__(self, node) -> None:
        self.kept: list[tuple] = []
        self.sent = asyncio.Event()
        self._peer = node.peer
        node.peer = self

    def __call__(self, addr: str):
        return _Client(self, self._peer(addr))

    def release(self) -> None:
        kept, self.kept = self.kept, []
        for client, args in kept:
            assert client.call_soon(*args)


class _Client:
    def __init__(self, held: Held, client) -> None:
        self.held, self.client = held, client

    def call_soon(self, *args) -> bool:
        if not self.client.connected:
            return False
        self.held.kept.append((self.client, args))
        self.held.sent.set()
        return True

    async def call(self, *args):
        return await self.client.call(*args)


async def connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def read_one(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


async def test_cold_misses_equal_bytes_and_counters(net, arrivals):  # noqa: F811
    """Misses, a hit after one, "not found": the same bytes (Date aside) and the same counters
    with the fast path as with aiohttp alone, starting from the same (empty) answer cache."""
    rec = net.recursive
    pair = await serve_pair(rec)
    try:
        assert (await net.get(f"{net.url}/api/handles/{demo_id(ENT, 0)}"))[0] == 200  # located
        one, two = demo_id(ENT, 1), demo_id(ENT, 2)
        chunks = [get(target(one)), get(target(one)), get(target(NOPE)), get(target(two)),
                  get(target(NOPE)), get(target("hdl:" + demo_id(ENT, 3))),
                  get(target(demo_id(ENT, 4).lower())), get(target(demo_id(ENT, 4)))]
        answers, moved, taken = [], [], rec.fast_miss.taken
        for port in pair.ports:
            rec.caches.answers.clear()
            before = node_counters(rec)
            answers.append(await exchange(port, chunks, arrivals))
            moved.append(counters_moved(before, node_counters(rec)))
        assert answers[0] == answers[1]
        assert answers[0].count(b"HTTP/1.1 200 OK") == 6
        assert answers[0].count(b"HTTP/1.1 404 Not Found") == 2
        assert moved[0] == moved[1]
        assert moved[1]["stats.upstream_calls"] == 5 and moved[1]["stats.upstream"] == 4
        # the first request of a connection is always the fast path's to take; later ones
        # are when aiohttp's loop is idle again by then (either way: the same bytes)
        assert rec.fast_miss.taken > taken
        assert pair.counts()[0] == pair.counts()[1]  # metrics: the same ops, codes, durations
    finally:
        await pair.close()


async def test_requests_behind_a_pending_miss_are_answered_in_order(net):  # noqa: F811
    rec = net.recursive
    pair = await serve_pair(rec)
    hot = "0.NA/" + ENT
    assert (await net.get(f"{net.url}/api/handles/{demo_id(ENT, 0)}"))[0] == 200  # connects
    assert (await net.get(f"{net.url}/api/handles/{hot}"))[0] == 200  # cached: a hit later
    held = Held(rec)
    reader, writer = await connect(pair.ports[1])
    try:
        writer.write(get(target(demo_id(ENT, 1))))
        await asyncio.wait_for(held.sent.wait(), 10)  # the miss is pending
        writer.write(get(target(hot)) + get(target(demo_id(ENT, 2))))  # pipelined behind it
        await writer.drain()
        for _ in range(20):  # let the server read them; nothing may be answered yet
            await asyncio.sleep(0)
        assert not reader._buffer  # noqa: SLF001 - nothing has come back
        held.release()
        first = await read_one(reader)
        assert b"200 OK" in first and demo_id(ENT, 1).encode() in first
        second = await read_one(reader)
        assert hot.encode() in second
        if held.kept or not held.sent.is_set():
            await asyncio.wait_for(held.sent.wait(), 10)
        held.release()
        third = await read_one(reader)
        assert demo_id(ENT, 2).encode() in third
    finally:
        writer.close()
        await pair.close()


async def test_identical_misses_share_one_call_and_a_leaver_harms_nobody(net):  # noqa: F811
    rec = net.recursive
    pair = await serve_pair(rec)
    assert (await net.get(f"{net.url}/api/handles/{demo_id(ENT, 0)}"))[0] == 200  # connects
    held = Held(rec)
    h = demo_id(ENT, 3)
    calls = rec.stats["upstream_calls"]
    leaver = await connect(pair.ports[1])
    patient = await connect(pair.ports[1])
    try:
        leaver[1].write(get(target(h)))
        await asyncio.wait_for(held.sent.wait(), 10)
        patient[1].write(get(target(h)))
        for _ in range(20):
            if rec.stats["coalesced"]:
                break
            await asyncio.sleep(0)
        assert rec.stats["coalesced"] == 1 and len(held.kept) == 1
        leaver[1].close()  # the client whose request started the call goes away
        await leaver[1].wait_closed()
        held.release()
        answer = await read_one(patient[0])
        assert b"200 OK" in answer and h.encode() in answer
        assert rec.stats["upstream_calls"] == calls + 1 and not rec._inflight
    finally:
        patient[1].close()
        await pair.close()


async def test_a_peer_that_goes_down_is_answered_as_resolve_answers(net, arrivals):  # noqa: F811
    """The secondary's RPC server closes: the fast path's call fails, the peer is marked,
    and the client gets the 503 aiohttp's path gives (same bytes), not a hang or a 500."""
    rec = net.recursive
    pair = await serve_pair(rec)
    try:
        assert (await net.get(f"{net.url}/api/handles/{demo_id(ENT, 0)}"))[0] == 200
        await rpc_server_of(net, "88.118").close()
        answers = []
        for i, port in enumerate(pair.ports):
            rec.health = type(rec.health)(rec.config.cache, rec.clock)  # the same state each:
            net.clock.advance(rec.config.rpc.retry_after)  # the client may connect again
            answers.append(await exchange(port, [get(target(demo_id(ENT, 1 + i)))], arrivals))
        assert b"HTTP/1.1 503" in answers[1]
        assert answers[0].replace(demo_id(ENT, 1).encode(), b"H") == \
            answers[1].replace(demo_id(ENT, 2).encode(), b"H")
        assert rec.health.state(net.topo.secondary("88.118").address.rpc_addr)[0] >= 1
    finally:
        await pair.close()


async def test_a_call_lost_in_flight_fails_over_to_the_mirror(net):  # noqa: F811
    """The primary takes the fast path's call, then its connection goes: the primary is marked
    failed once, the mirror is asked (not the primary again) and the client gets the answer."""
    rec = net.recursive
    assert (await net.get(f"{net.url}/api/handles/{demo_id(ENT, 0)}"))[0] == 200  # connects
    mirror = await serve_copy(net, "88.118")
    try:
        site = with_mirror(net, ENT, f"127.0.0.1:{mirror.port}")
        primary = rpc_server_of(net, "88.118")
        asked = asyncio.Event()

        async def never(caller, text):
            asked.set()
            await asyncio.Event().wait()
        primary._handlers["resolve"] = Method(never, primary._handlers["resolve"].roles)
        calls = Calls(rec)
        taken = rec.fast_miss.taken
        reply = asyncio.ensure_future(net.get(f"{net.url}/api/handles/{demo_id(ENT, 5)}"))
        await asyncio.wait_for(asked.wait(), 10)
        assert rec.fast_miss.taken == taken + 1 and calls.addrs == [site.rpc_addr]
        await primary.close()  # the call in flight is lost with the connection
        status, body = await asyncio.wait_for(reply, 10)
        assert status == 200 and body["handle"] == demo_id(ENT, 5)
        assert calls.addrs == [site.rpc_addr, site.mirrors[0][1]]
        assert rec.health.state(site.rpc_addr)[0] == 1 and rec.stats["failover_node"] == 1
    finally:
        await mirror.close()
