"""The RPC server's limits, on a FakeClock: a message must complete in time, idle and
unauthenticated connections are closed, connections are capped, a length header beyond the
cap closes at once, and warning lines are throttled. Plus the pure parts (``Lengths``,
``Throttle``).

Events are ordered by what the server sends (its challenge, an answer), never by sleeping;
``read_until_closed`` waits for the server to close under a guard timeout.
"""
from __future__ import annotations

import asyncio
import logging

import msgpack
import pytest

from resolver.clock import FakeClock
from resolver.config import RpcConfig
from resolver.roles import Role
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_auth import Keyring, Method, Trust
from resolver.rpc_wire import Lengths, Malformed, Throttle
from rpc_helpers import Raw, pack

pytestmark = pytest.mark.timeout(60)
KEYS = Keyring({"top": b"t" * 32, "recursive": b"r" * 32})
AS_RECURSIVE = Trust("recursive", KEYS)
LIMITS = RpcConfig(message_timeout=10.0, idle_timeout=300.0, handshake_timeout=5.0,
                   max_connections=3, max_message=1024 * 1024)


@pytest.fixture
async def served():
    clock = FakeClock()

    def echo(caller, *args):
        return list(args)
    srv = await RpcServer({"echo": Method(echo, [Role.RECURSIVE])}, LIMITS,
                          trust=Trust("top", KEYS), clock=clock).start()
    yield srv, clock
    await srv.close()


async def test_a_message_not_completed_in_time_closes_its_connection(served):
    srv, clock = served
    raw = await (await Raw.open(srv.port)).prove(AS_RECURSIVE)
    whole = msgpack.packb([0, 2, "echo", [b"x" * 100]])
    raw.writer.write(pack([0, 1, "echo", [1]]) + whole[:50])  # one answer, half a message
    assert await raw.next() == [1, 1, None, [1]]
    clock.advance(LIMITS.message_timeout - 0.5)
    assert srv.connections == 1
    clock.advance(0.5)
    assert await raw.closed()
    raw.close()


async def test_messages_completed_in_time_keep_the_connection(served):
    srv, clock = served
    raw = await (await Raw.open(srv.port)).prove(AS_RECURSIVE)
    for i in range(3):  # each arrives in two parts, the second 9 s after the first
        whole = msgpack.packb([0, i, "echo", [i]])
        raw.writer.write(pack([0, 100 + i, "echo", []]) + whole[:5])
        assert await raw.next() == [1, 100 + i, None, []]
        clock.advance(9.0)
        raw.writer.write(whole[5:])
        assert await raw.next() == [1, i, None, [i]]
    assert srv.connections == 1
    raw.close()


async def test_idle_connections_are_closed_and_clients_reconnect(served):
    srv, clock = served
    raw = await (await Raw.open(srv.port)).prove(AS_RECURSIVE)
    clock.advance(100)
    raw.writer.write(pack([0, 1, "echo", []]))  # activity: the idle time starts again
    assert await raw.next() == [1, 1, None, []]
    clock.advance(LIMITS.idle_timeout - 1)
    assert srv.connections == 1
    clock.advance(1)
    assert await raw.closed()
    raw.close()
    async with RpcClient("127.0.0.1", srv.port, LIMITS, clock=clock, trust=AS_RECURSIVE) as c:
        assert await c.call("echo", 1) == [1]
        clock.advance(LIMITS.idle_timeout)
        assert await c.call("echo", 2) == [2]  # a dropped connection is opened again


async def test_an_unauthenticated_connection_is_closed_after_the_handshake_timeout(served):
    srv, clock = served
    raw = await Raw.open(srv.port)
    assert (await raw.next())[1] == "idsim.challenge"
    clock.advance(LIMITS.handshake_timeout - 0.1)
    assert srv.connections == 1
    clock.advance(0.1)
    assert await raw.closed()
    raw.close()


async def test_an_unproven_connection_buffers_little(served):
    srv, clock = served
    raw = await Raw.open(srv.port)
    assert (await raw.next())[1] == "idsim.challenge"
    # the start of a 1 MiB message: within max_message, but far more than a hello
    raw.writer.write(msgpack.packb([0, 1, "echo", [b"x" * (LIMITS.max_message - 64)]])[:100_000])
    assert await raw.closed()  # at once: no clock advance
    raw.close()


async def test_connection_cap_closes_the_oldest_unproven_then_refuses(served):
    srv, clock = served
    idle = [await Raw.open(srv.port) for _ in range(3)]
    for r in idle:
        assert (await r.next())[1] == "idsim.challenge"  # each was accepted
    newcomer = await (await Raw.open(srv.port)).prove(AS_RECURSIVE)  # room made: the oldest unproven goes
    assert await idle[0].closed()
    proven = [newcomer] + [await r.prove(AS_RECURSIVE) for r in idle[1:]]
    late = await Raw.open(srv.port)  # three proven connections: no room, refused
    assert await late.closed()
    proven[0].writer.write(pack([0, 1, "echo", ["still"]]))
    assert await proven[0].next() == [1, 1, None, ["still"]]
    for r in idle + proven + [late]:
        r.close()


@pytest.mark.parametrize("header", [
    b"\xc6\xff\xff\xff\xff",                                    # bin32 of 4 GiB
    b"\xdb\xff\xff\xff\xff",                                    # str32 of 4 GiB
    b"\x94\x00\x01\xa4echo\x91\xc6\x7f\xff\xff\xff",  # [0, 1, "echo", [bin of 2 GiB]]
    b"\xc9\xff\xff\xff\xff\x01",                                # ext32
])
async def test_a_length_header_beyond_the_cap_closes_at_once(served, header):
    srv, clock = served
    raw = await (await Raw.open(srv.port)).prove(AS_RECURSIVE)
    raw.writer.write(header)  # no clock advance: only the header itself can close it
    assert await raw.closed()
    raw.close()


async def test_warning_lines_are_throttled(served, caplog):
    srv, clock = served
    with caplog.at_level(logging.WARNING, logger="resolver.rpc"):
        for _ in range(40):
            raw = await Raw.open(srv.port)
            raw.writer.write(b"\xc1")  # not msgpack
            assert await raw.closed()
            raw.close()
        lines = [r for r in caplog.records if r.name == "resolver.rpc"]
        assert len(lines) == LIMITS.log_burst
        assert srv.warnings_dropped == 30
        clock.advance(LIMITS.log_window)
        raw = await Raw.open(srv.port)
        raw.writer.write(b"\xc1")
        assert await raw.closed()
        raw.close()
        assert "(30 similar lines left out)" in caplog.records[-1].getMessage()
    assert not any(r.exc_info for r in caplog.records)  # no traceback for bad input


def test_default_limits_are_sane():
    config = RpcConfig()
    assert config.max_message == 4 * 2**20 and config.max_answer == 16 * 2**20
    assert 0 < config.handshake_timeout < config.message_timeout < config.idle_timeout
    assert config.max_connections >= 256


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 4096])
def test_lengths_accepts_any_valid_message_in_any_pieces(step):
    doc = [0, 1, "m", [None, True, -1, 2**40, -2**40, 1.5, "é" * 40, b"x" * 300,
                       {"k": [1, {"n": b""}]}, msgpack.ExtType(3, b"abcd"),
                       msgpack.ExtType(4, b"z" * 40), list(range(20)), "s" * 70000]]
    data = msgpack.packb(doc, use_bin_type=True)
    walker = Lengths(2**20)
    for i in range(0, len(data), step):
        walker.feed(data[i:i + step])
    assert walker._stack == [] and walker._skip == 0 and walker._tail == b""


@pytest.mark.parametrize("data", [b"\xc6\x00\x10\x00\x01", b"\xdd\x00\x10\x00\x01",
                                  b"\xdf\x00\x08\x00\x01", b"\x91" * 2000, b"\xc1"])
def test_lengths_refuses_what_cannot_fit(data):
    with pytest.raises(Malformed):
        Lengths(2**20).feed(data)


def test_throttle_writes_a_burst_per_window_then_says_how_many_were_left_out():
    clock = FakeClock()
    t = Throttle(3, 60.0, clock)
    assert [t.allow() for _ in range(5)] == [0, 0, 0, None, None]
    clock.advance(59.9)
    assert t.allow() is None
    clock.advance(0.1)
    assert t.allow() == 3 and t.allow() == 0
