"""Applying the WAN model (``resolver.link``): a link sleeps each message's modelled delay on
the injected clock, within a deadline; RPC calls (and the round trips of a new connection) and
the writes a recursive node passes on pay those delays; with the WAN off nothing is added.

Time is a ``FakeClock`` that also reports each sleep (``WatchedClock``): a test awaits the
sleep it expects, checks the call has not completed, then advances the clock by exactly that
much. The expected delays come from a second model with the same seed (a link's draws are a
function of the seed, src and dst only). The last test starts ``idsim up --wan china``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from benchmarks.network import free_preset
from network_fixtures import Net, free_topology, net  # noqa: F401  (net: fixture)
from resolver import identifiers
from resolver.clock import FakeClock
from resolver.config import Config, WanConfig
from resolver.errors import PeerUnavailable
from resolver.link import Links
from resolver.recursive import RecursiveNode
from resolver.resolution import Site
from resolver.roles import Role
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_auth import Keyring, Method, Trust
from resolver.wan import WanModel
from test_cli_up import REPO, Up, get_json
from topology.cluster import make_logins
from topology.wan_presets import WAN_PRESETS, place_of
from topology.wiring import start_nodes

pytestmark = pytest.mark.timeout(60)
GUARD = 10.0  # s: the longest a test waits for the code under test to reach its next sleep
# the china preset without loss or bandwidth: every delay is base + jitter, whatever the size
CHINA = dataclasses.replace(WanConfig(**WAN_PRESETS["china"]), enabled=1, loss=0.0,
                            bandwidth_mbps=0.0)
WHERE = {"recursive": "Guangzhou", "top": "Guangzhou", "88.201": "Beijing"}
KEYS = Keyring({"top": b"t" * 32, "recursive": b"r" * 32, "88.201": b"s" * 32})


class WatchedClock(FakeClock):
    """A FakeClock whose sleeps are announced on ``sleeps`` (seconds), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: asyncio.Queue[float] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.put_nowait(seconds)
        await super().sleep(seconds)

    async def next_sleep(self) -> float:
        return await asyncio.wait_for(self.sleeps.get(), GUARD)


def wan(config: WanConfig = CHINA, matrix=None) -> WanModel:
    return WanModel(config, {n: place_of(c) for n, c in WHERE.items()}, matrix)


async def expect_delays(clock: WatchedClock, task: asyncio.Task, delays_ms: list[float]):
    """Each expected sleep happens in turn, the task waits through it, the clock moves."""
    for ms in delays_ms:
        seconds = await clock.next_sleep()
        assert seconds * 1000 == pytest.approx(ms)
        clock.advance(seconds / 2)
        await asyncio.sleep(0)  # a yield, not a wait: the task may run if it were free to
        assert not task.done()
        clock.advance(seconds / 2)
    return await asyncio.wait_for(task, GUARD)


async def test_a_link_sleeps_the_modelled_delay_each_way():
    clock = WatchedClock()
    link = Links(wan(), clock, {}).between("recursive", "88.201")
    out, back = wan().link("recursive", "88.201"), wan().link("88.201", "recursive")
    start = clock()
    task = asyncio.ensure_future(link.before_send(100))
    await expect_delays(clock, task, [out.draw().ms])
    task = asyncio.ensure_future(link.before_deliver(100))
    await expect_delays(clock, task, [back.draw().ms])
    assert clock() - start == pytest.approx((out.base_ms + back.base_ms) / 1000, rel=0.2)


async def test_a_delay_past_the_deadline_sleeps_to_it_and_fails():
    clock = WatchedClock()
    slow = wan(CHINA, {("Guangzhou", "Beijing"): 5000.0, ("Beijing", "Guangzhou"): 5000.0})
    link = Links(slow, clock, {}).between("recursive", "88.201")
    task = asyncio.ensure_future(link.before_send(100, deadline=clock() + 1.0))
    assert await clock.next_sleep() == pytest.approx(1.0)
    clock.advance(1.0)
    with pytest.raises(PeerUnavailable, match="past the timeout"):
        await asyncio.wait_for(task, GUARD)


async def test_a_message_lost_on_every_retry_fails_after_its_timeouts():
    clock = WatchedClock()
    lossy = dataclasses.replace(CHINA, jitter_median_ms=0.0, loss=0.999999, max_retries=0)
    link = Links(wan(lossy), clock, {}).between("recursive", "88.201")
    task = asyncio.ensure_future(link.before_send(100))
    seconds = await clock.next_sleep()
    assert seconds * 1000 == pytest.approx(wan(lossy).base_ms("recursive", "88.201") + 200)
    clock.advance(seconds)
    with pytest.raises(PeerUnavailable, match="lost after 0 retransmissions"):
        await asyncio.wait_for(task, GUARD)


async def test_a_blocked_link_refuses_at_once_without_drawing():
    clock = WatchedClock()
    links = Links(wan(), clock, {})
    link = links.between("recursive", "88.201")
    links.blocked = lambda a, b: {a, b} == {"recursive", "88.201"}  # set while running
    with pytest.raises(PeerUnavailable, match="recursive cannot reach 88.201"):
        await link.before_send(100)
    with pytest.raises(PeerUnavailable, match="88.201 cannot reach recursive"):
        await link.before_deliver(100)
    assert clock.sleeps.empty()
    links.blocked = None  # cleared: the link's draws start where they were, at the first
    task = asyncio.ensure_future(link.before_send(100))
    await expect_delays(clock, task, [wan().link("recursive", "88.201").draw().ms])


@pytest.fixture
async def echo_server():
    handlers = {"echo": Method(lambda caller, *args: list(args), list(Role))}
    async with RpcServer(handlers, trust=Trust("88.201", KEYS)) as srv:
        await srv.start("127.0.0.1", 0)
        yield srv


async def test_an_rpc_call_completes_only_after_the_modelled_delays(echo_server):
    clock = WatchedClock()
    links = Links(wan(), clock, {f"127.0.0.1:{echo_server.port}": "88.201"})
    client = RpcClient("127.0.0.1", echo_server.port, clock=clock,
                       trust=Trust("recursive", KEYS))
    client.link = links.to_address("recursive", f"127.0.0.1:{echo_server.port}")
    out, back = wan().link("recursive", "88.201"), wan().link("88.201", "recursive")
    try:
        task = asyncio.ensure_future(client.call("echo", "x"))
        # connect: TCP's round trip, the handshake's round trip; then the call and its answer
        expected = [out.draw().ms, back.draw().ms, out.draw().ms, back.draw().ms,
                    out.draw().ms, back.draw().ms]
        start = clock()
        assert await expect_delays(clock, task, expected) == ["x"]
        assert clock() - start == pytest.approx(sum(expected) / 1000, abs=1e-6)
        # a second call on the open connection pays only its own round trip
        task = asyncio.ensure_future(client.call("echo", "y"))
        assert await expect_delays(clock, task, [out.draw().ms, back.draw().ms]) == ["y"]
    finally:
        await client.close()


async def test_without_a_link_an_rpc_call_adds_no_delay(echo_server):
    clock = WatchedClock()
    async with RpcClient("127.0.0.1", echo_server.port, clock=clock,
                         trust=Trust("recursive", KEYS)) as client:
        assert client.link is None
        assert await asyncio.wait_for(client.call("echo", "x"), GUARD) == ["x"]
    assert clock.sleeps.empty() and clock() == FakeClock().t


async def test_a_forwarded_write_pays_the_delays_of_the_link():
    received = []

    async def put(request):
        received.append(await request.read())
        return web.json_response({"responseCode": 1, "handle": "88.201.8/X"}, status=201)

    app = web.Application()
    app.router.add_put("/api/handles/{tail:.*}", put)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    site = Site("88.201", f"http://127.0.0.1:{port}", "127.0.0.1:1")
    clock = WatchedClock()
    links = Links(wan(), clock, {site.rpc_addr: "88.201"})
    node = RecursiveNode("recursive", "127.0.0.1:2", Config(), clock=clock,
                         links=links.for_node("recursive"))

    async def locate(prefix):
        return site
    node.locate = locate
    try:
        assert node.top.link is None  # 127.0.0.1:2 is no node of this model
        handle = identifiers.parse("88.201.8/X")
        task = asyncio.ensure_future(node.forward("PUT", handle, "/api/handles/88.201.8/X",
                                                  b"{}", {}))
        out, back = wan().link("recursive", "88.201"), wan().link("88.201", "recursive")
        assert await clock.next_sleep() * 1000 == pytest.approx(out.draw().ms)
        assert received == []  # the request is not sent before its delay has passed
        clock.advance(1.0)
        assert await clock.next_sleep() * 1000 == pytest.approx(back.draw().ms)
        assert received == [b"{}"] and not task.done()  # the answer waits for its delay
        clock.advance(1.0)
        status, payload, _ = await asyncio.wait_for(task, GUARD)
        assert status == 201
    finally:
        await node.close()
        await runner.cleanup()


# ------------------------------------------------------------------ wiring


async def test_with_the_wan_on_every_client_of_a_node_carries_its_link(tmp_path):
    topo = free_topology("mini")
    config = Config().with_values("test", {"wan": {"enabled": 1, "loss": 0}})
    names = ["top", "recursive", *(s.code for s in topo.secondaries)]
    running = await start_nodes(topo, names, config, data_dir=tmp_path,
                                logins=make_logins(topo), store="memory")
    try:
        assert running.links is not None
        recursive = running.nodes["recursive"]
        assert (recursive.top.link.src, recursive.top.link.dst) == ("recursive", "top")
        assert {(c.link.src, c.link.dst) for c in running.clients} == {
            (s.code, "top") for s in topo.secondaries} | {("recursive", "top")}
        shenzhen = next(s for s in topo.secondaries if s.city == "Shenzhen")
        prefix = topo.enterprises_of(shenzhen.code)[0].prefix
        handle = identifiers.parse(f"{prefix}/{'SN' + '0' * 9}")
        await recursive.resolve(handle)
        peer = recursive._peers[shenzhen.address.rpc_addr]
        assert (peer.link.src, peer.link.dst) == ("recursive", shenzhen.code)
        assert peer.link.out.base_ms == running.links.model.base_ms("recursive", shenzhen.code)
    finally:
        await running.close()


async def test_with_the_wan_off_no_client_has_a_link(net: Net):
    assert net.host.links is None
    assert net.recursive.top.link is None and net.recursive.links is None
    assert all(c.link is None for c in net.host.clients)


def test_idsim_up_with_wan_china_starts_and_resolves(tmp_path: Path):
    base = free_preset("mini").recursive.http_port
    data = tmp_path / "data"
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "up", "--preset", "mini", "--port", str(base),
             "--data", str(data), "--workers", "1", "--store", "memory", "--wan", "china"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    up = Up(proc, data, log)
    try:
        state = up.wait_ready()
        assert "enabled = 1" in (data / "config.toml").read_text().split("[wan]")[1]
        example = next(e for e in state["examples"] if e.startswith("88.201."))  # Shenzhen
        t0 = time.monotonic()
        status, body = get_json(f"{state['recursiveUrl']}/api/handles/{example}")
        cold = time.monotonic() - t0
        assert status == 200, body
        # at least the round trip Guangzhou <-> Shenzhen of the resolve call (a lower bound:
        # the delays can only add)
        model = WanModel(WanConfig(**WAN_PRESETS["china"]),
                         {"r": place_of("Guangzhou"), "s": place_of("Shenzhen")})
        assert cold >= (model.base_ms("r", "s") + model.base_ms("s", "r")) / 1000
        assert up.interrupt() == 0
    finally:
        up.kill_all()


async def test_links_without_a_model_only_check_blocked():
    clock = WatchedClock()
    links = Links(None, clock, {"127.0.0.1:9": "88.201"})  # partitions with the WAN off
    link = links.to_address("recursive", "127.0.0.1:9")
    await link.before_send(100)
    await link.round_trip()
    assert clock.sleeps.empty() and clock() == FakeClock().t
    links.blocked = lambda a, b: True
    with pytest.raises(PeerUnavailable, match="partitioned"):
        await link.before_send(100)
    assert links.to_address("recursive", "127.0.0.1:10") is None  # not a node: no link


async def test_a_delay_past_the_timeout_fails_the_connect_or_the_call_cleanly(echo_server):
    clock = WatchedClock()
    unhandled = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: unhandled.append(ctx))
    slow = wan(CHINA, {("Guangzhou", "Beijing"): 5000.0})  # 5 s each way; rpc.timeout 2 s
    client = RpcClient("127.0.0.1", echo_server.port, clock=clock,
                       trust=Trust("recursive", KEYS))
    client.link = Links(slow, clock, {}).between("recursive", "88.201")
    try:
        task = asyncio.ensure_future(client.call("echo", "x"))
        assert await clock.next_sleep() == pytest.approx(5.0, abs=0.1)  # the SYN: 5 s + jitter
        clock.advance(client.config.connect_timeout)
        with pytest.raises(PeerUnavailable, match="no connection within"):
            await asyncio.wait_for(task, GUARD)
        # connected at the modelled speed, then the request's way becomes 5 s long
        clock.advance(client.config.retry_after)
        client.link = Links(wan(), clock, {}).between("recursive", "88.201")
        task = asyncio.ensure_future(client.call("echo", "x"))
        for _ in range(6):
            clock.advance(await clock.next_sleep())
        assert await asyncio.wait_for(task, GUARD) == ["x"]
        client.link.out = slow.link("recursive", "88.201")
        task = asyncio.ensure_future(client.call("echo", "y"))
        assert await clock.next_sleep() == pytest.approx(client.config.timeout)  # not 5 s
        clock.advance(client.config.timeout)
        failed = "answered"
        try:
            await asyncio.wait_for(task, GUARD)
        except PeerUnavailable as exc:
            failed = exc.message
        del task  # with its traceback: the call's future may be collected now
        assert "past the timeout" in failed
        assert client.connected  # a slow message is no lost connection
    finally:
        await client.close()
    gc.collect()
    assert not unhandled  # the call's future, failed by its timer, was not left unretrieved
