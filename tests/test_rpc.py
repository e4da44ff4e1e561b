"""msgpack-rpc between nodes: wire format, pipelining, error mapping, failure handling.

Timeouts and the retry window run on ``resolver.clock.FakeClock``: a test moves time with
``advance`` and orders events by awaiting a handler's ``started`` event, never by sleeping.
"""
from __future__ import annotations

import asyncio
import logging
import socket

import msgpack
import pytest
import uvloop

from resolver import rpc_client
from resolver.clock import FakeClock
from resolver.config import RpcConfig
from resolver.errors import HandleError, PeerUnavailable
from resolver.rpc import RpcClient, RpcServer

pytestmark = pytest.mark.timeout(30)  # a hang fails the test instead of blocking the suite
CONFIG = RpcConfig()

def echo(*args):
    return list(args)


async def aecho(*args):
    await asyncio.sleep(0)  # suspend once, so the answer takes the awaitable path
    return list(args)


def fail_handle(code, message, handle):
    raise HandleError(code, message, handle=handle)


def boom():
    raise ZeroDivisionError("boom")


async def hang(started: asyncio.Event, release: asyncio.Event):
    """A handler that answers only when ``release`` is set; ``started`` says it was called."""
    started.set()
    await release.wait()


@pytest.fixture
async def server():
    srv = RpcServer({"echo": echo, "aecho": aecho, "fail": fail_handle, "boom": boom,
                     "add": lambda a, b: a + b})
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def client(server, clock):
    c = RpcClient("127.0.0.1", server.port, clock=clock)
    yield c
    await c.close()


async def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send raw bytes; everything read until the server closed the connection.

    A close is the end of the stream (FIN) or a reset; a server that keeps the connection
    open fails the test through the module's timeout.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    got = b""
    try:
        while chunk := await reader.read(65536):
            got += chunk
    except ConnectionResetError:
        pass
    writer.close()
    return got


PAYLOADS = [
    "text", "", "ünïcødé", 0, -1, 2**40, 1.5, True, None, b"", b"\x00\xffbytes",
    [1, [2, [3, b"x"]], "y"], {"k": b"v", "n": None, "l": [1, 2]}, {1: "int key"},
]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("method", ["echo", "aecho"])
async def test_round_trip_types(client, method):
    result = await client.call(method, *PAYLOADS)
    assert result == PAYLOADS
    assert type(result[10]) is bytes and type(result[9]) is bytes
    assert type(result[12]["k"]) is bytes


async def test_no_params_and_scalar_result(client):
    assert await client.call("echo") == []
    assert await client.call("add", 2, 3) == 5
    assert await client.call("add", b"ab", b"cd") == b"abcd"


async def test_wire_format_is_plain_msgpack_rpc(server):
    req = msgpack.packb([0, 7, "add", [1, 2]], use_bin_type=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(req)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(await reader.read(65536))
    assert list(unpacker) == [[1, 7, None, 3]]
    writer.close()


async def test_pipelining_on_one_connection(server, client):
    results = await asyncio.gather(*(client.call("add", i, 1) for i in range(200)))
    assert results == [i + 1 for i in range(200)]
    assert server.connections_opened == 1
    assert client.connect_attempts == 1  # 200 callers waited for one connect


async def test_msgid_wraps(server, client):
    client._next_id = 2**32 - 3
    results = await asyncio.gather(*(client.call("add", i, 0) for i in range(6)))
    assert results == list(range(6))
    assert client._next_id == 3


async def test_slow_request_does_not_block_fast_one():
    started, release = asyncio.Event(), asyncio.Event()
    order = []

    async def slow():
        started.set()
        await release.wait()
        order.append("slow")
        return "slow"

    def fast():
        order.append("fast")
        return "fast"

    async with RpcServer({"slow": slow, "fast": fast}) as srv:
        await srv.start()
        async with RpcClient("127.0.0.1", srv.port) as c:
            slow_call = asyncio.ensure_future(c.call("slow"))
            await started.wait()  # the slow request is being served first
            assert await c.call("fast") == "fast"
            assert not slow_call.done()
            release.set()
            assert await slow_call == "slow"
            assert order == ["fast", "slow"]
            assert srv.connections_opened == 1


# --------------------------------------------------------------------------- errors


async def test_handle_error_round_trips(client):
    with pytest.raises(HandleError) as info:
        await client.call("fail", 100, "Handle Not Found", "21.T1/abc")
    err = info.value
    assert (err.code, err.message, err.handle, err.status) == (100, "Handle Not Found",
                                                               "21.T1/abc", 404)
    assert not isinstance(err, PeerUnavailable)
    with pytest.raises(HandleError) as info:
        await client.call("fail", 402, None, None)
    assert (info.value.code, info.value.message, info.value.handle) == (402, None, None)
    assert info.value.status == 401


async def test_remote_peer_unavailable_keeps_code_and_status():
    def upstream():
        raise PeerUnavailable("GHR down", handle="21.T1/x")

    async with RpcServer({"up": upstream}) as srv:
        await srv.start()
        async with RpcClient("127.0.0.1", srv.port) as c:
            with pytest.raises(HandleError) as info:
                await c.call("up")
    assert (info.value.code, info.value.status, info.value.message) == (3, 503, "GHR down")


async def test_unknown_method(client):
    with pytest.raises(HandleError) as info:
        await client.call("nope", 1)
    assert info.value.code == 4
    assert info.value.message == "unknown method nope"
    assert await client.call("add", 1, 1) == 2


async def test_internal_error_is_code_2_and_server_keeps_serving(client, caplog):
    with caplog.at_level(logging.ERROR, logger="resolver.rpc"):
        with pytest.raises(HandleError) as info:
            await client.call("boom")
    assert info.value.code == 2
    assert info.value.message == "internal error: ZeroDivisionError"
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    # wrong arity is a TypeError in the handler: also code 2
    with pytest.raises(HandleError) as info:
        await client.call("add", 1)
    assert info.value.message == "internal error: TypeError"
    assert await client.call("add", 1, 2) == 3


async def test_unencodable_result_is_internal_error():
    srv = RpcServer({"weird": lambda: {1, 2}})
    await srv.start()
    try:
        async with RpcClient("127.0.0.1", srv.port) as c:
            with pytest.raises(HandleError) as info:
                await c.call("weird")
            assert info.value.code == 2
    finally:
        await srv.close()


# --------------------------------------------------------------------------- failures


async def test_timeout_raises_peer_unavailable(clock):
    started, never = asyncio.Event(), asyncio.Event()
    handlers = {"hang": lambda: hang(started, never), "add": lambda a, b: a + b}
    async with RpcServer(handlers) as srv:
        await srv.start()
        async with RpcClient("127.0.0.1", srv.port, RpcConfig(timeout=2.0), clock=clock) as c:
            call = asyncio.ensure_future(c.call("hang"))
            await started.wait()
            clock.advance(1.9)  # not before the configured timeout ...
            assert [f.done() for f in c._conn.pending.values()] == [False]
            clock.advance(0.1)
            with pytest.raises(PeerUnavailable) as info:
                await call  # ... but at it
            assert info.value.message == f"127.0.0.1:{srv.port} did not answer hang within 2.0s"
            assert info.value.status == 503
            assert not c._conn.pending  # the timed-out call left nothing behind
            assert await c.call("add", 1, 2) == 3  # connection still usable
            assert srv.connections_opened == 1


async def test_server_close_fails_pending_call_then_client_reconnects(clock):
    started, never = asyncio.Event(), asyncio.Event()
    handlers = {"hang": lambda: hang(started, never), "add": lambda a, b: a + b}
    srv = await RpcServer(handlers).start()
    port = srv.port
    c = RpcClient("127.0.0.1", port, clock=clock)
    try:
        assert await c.call("add", 1, 1) == 2
        pending = asyncio.ensure_future(c.call("hang"))
        await started.wait()
        await srv.close()
        with pytest.raises(PeerUnavailable) as info:
            await pending  # the fake clock stands still: no timeout can fire
        assert info.value.message == f"connection to 127.0.0.1:{port} lost"

        # peer down: the reconnect attempt is refused ...
        with pytest.raises(PeerUnavailable):
            await c.call("add", 1, 2)
        attempts = c.connect_attempts
        srv = await RpcServer(handlers).start(port=port)
        # ... and within retry_after the client does not even try
        with pytest.raises(PeerUnavailable):
            await c.call("add", 1, 2)
        assert c.connect_attempts == attempts
        clock.advance(CONFIG.retry_after)
        assert await c.call("add", 1, 2) == 3
        assert c.connect_attempts == attempts + 1
    finally:
        await c.close()
        await srv.close()


async def test_connection_refused_then_fail_fast(clock):
    with socket.socket() as placeholder:  # bound, not listening: connects are refused
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        c = RpcClient("127.0.0.1", port, RpcConfig(retry_after=0.5), clock=clock)
        try:
            with pytest.raises(PeerUnavailable) as info:
                await c.call("add", 1, 2)
            assert f"127.0.0.1:{port}" in info.value.message
            assert c.connect_attempts == 1
            clock.advance(0.1)
            results = await asyncio.gather(*(c.call("add", 1, 2) for _ in range(5)),
                                           return_exceptions=True)
            assert all(isinstance(r, PeerUnavailable) for r in results)
            assert c.connect_attempts == 1
            clock.advance(0.4)
            with pytest.raises(PeerUnavailable):
                await c.call("add", 1, 2)
            assert c.connect_attempts == 2
        finally:
            await c.close()


async def test_concurrent_callers_share_one_failed_connect():
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        c = RpcClient("127.0.0.1", placeholder.getsockname()[1])
        results = await asyncio.gather(*(c.call("x") for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, PeerUnavailable) for r in results)
        assert c.connect_attempts == 1
        await c.close()


@pytest.mark.parametrize("garbage", [
    b"\xc1",                                              # reserved msgpack byte
    msgpack.packb({"not": "a list"}),                     # wrong type
    msgpack.packb([0, "id", "add", [1, 2]]),              # msgid not an int
    msgpack.packb([0, 1, "add", 5]),                      # params not an array
    msgpack.packb([1, 1, None, 3]),                       # a response sent to a server
    b"\xa3\xff\xfe\xfd",                                  # invalid utf-8 str
])
async def test_malformed_input_closes_only_that_connection(server, client, garbage):
    assert await client.call("add", 1, 1) == 2
    got = await raw_exchange(server.port, garbage + msgpack.packb([0, 1, "add", [1, 2]]))
    assert got == b""  # closed without answering anything after the bad message
    assert await client.call("add", 2, 2) == 4
    assert server.connections == 1  # only the client's connection is left


async def test_garbage_from_server_fails_pending_calls():
    writers = []

    async def garbage_server(reader, writer):
        writers.append(writer)
        await reader.read(100)
        writer.write(b"\xc1")

    listener = await asyncio.start_server(garbage_server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with RpcClient("127.0.0.1", port, clock=FakeClock()) as c:
        with pytest.raises(PeerUnavailable) as info:
            await c.call("add", 1, 2)  # the fake clock stands still: no timeout can fire
        assert info.value.message == f"malformed answer from 127.0.0.1:{port}"
        assert not c.connected
    for writer in writers:
        writer.close()
    listener.close()
    await listener.wait_closed()


async def test_oversized_message_closes_connection():
    async with RpcServer({"echo": echo}, RpcConfig(max_message=1024)) as srv:
        await srv.start()
        got = await raw_exchange(srv.port, msgpack.packb([0, 1, "echo", [b"x" * 4096]]))
        assert got == b""


async def test_closed_client_refuses_calls(client):
    assert await client.call("add", 1, 1) == 2
    await client.close()
    with pytest.raises(PeerUnavailable):
        await client.call("add", 1, 1)


async def test_client_close_fails_pending_calls(clock):
    started, never = asyncio.Event(), asyncio.Event()
    async with RpcServer({"hang": lambda: hang(started, never)}) as srv:
        await srv.start()
        c = RpcClient("127.0.0.1", srv.port, clock=clock)
        pending = asyncio.ensure_future(c.call("hang"))
        await started.wait()
        await c.close()
        with pytest.raises(PeerUnavailable) as info:
            await pending
        assert info.value.message == f"rpc client for 127.0.0.1:{srv.port} closed"


class Stalled(asyncio.Protocol):
    """A peer that stops reading at the first bytes it gets; ``lost`` is set when it ends."""

    def __init__(self, receiving: asyncio.Future, lost: asyncio.Future):
        self.receiving, self.lost = receiving, lost

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if not self.receiving.done():
            self.transport.pause_reading()
            self.receiving.set_result(self.transport)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def test_close_aborts_after_close_timeout_when_peer_does_not_read(clock):
    loop = asyncio.get_running_loop()
    receiving, lost = loop.create_future(), loop.create_future()
    listener = await loop.create_server(lambda: Stalled(receiving, lost), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    c = RpcClient("127.0.0.1", port, RpcConfig(close_timeout=3.0), clock=clock)
    try:
        # far more than the loopback socket buffers hold: most of it stays unsent
        call = asyncio.ensure_future(c.call("echo", b"x" * (32 * 2**20)))
        peer = await receiving
        closing = asyncio.ensure_future(c.close())
        with pytest.raises(PeerUnavailable):
            await call
        assert not closing.done()  # waiting for the unsent bytes to drain ...
        clock.advance(3.0)
        await closing  # ... until close_timeout, then the rest is dropped
        peer.resume_reading()
        await lost  # and the peer sees the connection end
    finally:
        listener.close()
        await listener.wait_closed()


# --------------------------------------------------------------------------- notifications


async def test_notifications_delivered_without_answer():
    seen = []
    done = asyncio.Event()

    def note(*args):
        seen.append(args)

    async def anote(*args):
        seen.append(args)
        done.set()

    async with RpcServer({"note": note, "anote": anote, "add": lambda a, b: a + b}) as srv:
        await srv.start()
        async with RpcClient("127.0.0.1", srv.port) as c:
            c.notify("note", 1, b"x")  # not connected yet: sent once connected
            c.notify("note", 2)
            c.notify("anote", 3)
            c.notify("missing", 4)  # unknown: dropped by the server, connection survives
            await done.wait()
            assert seen == [(1, b"x"), (2,), (3,)]
            assert await c.call("add", 1, 1) == 2
            assert srv.connections_opened == 1

        # on the wire: a notification produces no bytes, the request after it gets one answer
        payload = (msgpack.packb([2, "note", [5]]) + msgpack.packb([2, "boom", []])
                   + msgpack.packb([0, 9, "add", [1, 1]]))
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(payload)
        unpacker = msgpack.Unpacker(raw=False)
        async with asyncio.timeout(1.0):
            unpacker.feed(await reader.read(65536))
        assert list(unpacker) == [[1, 9, None, 2]]
        assert seen[-1] == (5,)
        writer.close()


async def test_notify_to_dead_peer_is_dropped(clock):
    with socket.socket() as placeholder:  # bound, not listening: connects are refused
        placeholder.bind(("127.0.0.1", 0))
        c = RpcClient("127.0.0.1", placeholder.getsockname()[1], clock=clock)
        c.notify("note", 1)  # starts a connect ...
        with pytest.raises(PeerUnavailable):
            await c.call("note", 0)  # ... which this call shares, and which is refused
        c.notify("note", 2)  # within retry_after: dropped without a connect
        assert c.connect_attempts == 1
        await c.close()


async def test_connect_timeout_runs_on_the_clock(clock, monkeypatch):
    dialing = asyncio.Event()

    async def never_connects(host, port):
        dialing.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(rpc_client.net, "connect", never_connects)
    c = RpcClient("127.0.0.1", 1, RpcConfig(connect_timeout=1.0, retry_after=0.5), clock=clock)
    call = asyncio.ensure_future(c.call("add", 1, 2))
    await dialing.wait()
    clock.advance(0.9)
    assert c._connecting is not None and not c._connecting.done()
    clock.advance(0.1)
    with pytest.raises(PeerUnavailable) as info:
        await call
    assert info.value.message == "cannot connect to 127.0.0.1:1: no connection within 1.0s"
    with pytest.raises(PeerUnavailable) as info:
        await c.call("add", 1, 2)  # within retry_after: fails at once, no new attempt
    assert "connect failed 0.00s ago: no connection within 1.0s" in info.value.message
    assert c.connect_attempts == 1
    await c.close()


# --------------------------------------------------------------------------- uvloop


async def _scenario_uvloop():
    started, never = asyncio.Event(), asyncio.Event()
    handlers = {"echo": echo, "aecho": aecho, "fail": fail_handle,
                "hang": lambda: hang(started, never)}
    srv = await RpcServer(handlers).start()
    c = RpcClient("127.0.0.1", srv.port)
    clock = FakeClock()
    impatient = RpcClient("127.0.0.1", srv.port, clock=clock)
    try:
        assert await c.call("echo", *PAYLOADS) == PAYLOADS
        res = await asyncio.gather(*(c.call("aecho", i, b"b") for i in range(200)))
        assert res == [[i, b"b"] for i in range(200)]
        assert srv.connections_opened == 1
        with pytest.raises(HandleError) as info:
            await c.call("fail", 101, "exists", "21.T1/y")
        assert (info.value.code, info.value.handle) == (101, "21.T1/y")
        hanging = asyncio.ensure_future(impatient.call("hang"))
        await started.wait()
        clock.advance(CONFIG.timeout)
        with pytest.raises(PeerUnavailable):
            await hanging
        got = await raw_exchange(srv.port, b"\xc1")
        assert got == b""
        assert await c.call("echo", 1) == [1]
    finally:
        await c.close()
        await impatient.close()
        await srv.close()
    with pytest.raises(PeerUnavailable):
        await c.call("echo")


def test_under_uvloop():
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(_scenario_uvloop())
