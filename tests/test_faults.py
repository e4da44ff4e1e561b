"""Faults set while the network runs: the pure state (``resolver.faults``), each kind as a
client sees it on an in-process ``mini`` network (``resolver.fault_inject``, FakeClock: the
RPC timeout and slow delays pass only when the test advances time), and the control API
(``topology.control``). Waits are on events (``Injector.holding``) or bounded; no sleeps.
"""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest

from network_fixtures import FakeClock, free_topology
from resolver.config import Config
from resolver.fault_inject import Injector
from resolver.faults import FaultError, FaultState, fault_from, parse_duration
from resolver.web import NodeAPI
from topology import control
from topology.cluster import make_logins
from topology.wiring import start_nodes

SEED = 7


# ------------------------------------------------------------------ pure state

def state(clock=None) -> FaultState:
    return FaultState(clock or FakeClock(), random.Random(SEED))


def test_specs_are_checked_one_line_each() -> None:
    for bad in ({"kind": "melt", "node": "a"}, {"kind": "slow", "node": "a"},
                {"kind": "errors", "node": "a", "rate": 1.5},
                {"kind": "errors", "node": "a", "rate": True},
                {"kind": "partition", "node": "a", "peer": "a"},
                {"kind": "down", "node": ""}, {"kind": "down", "node": "a", "color": 1},
                {"kind": "slow", "node": "a", "delay": "fast"}, ["down"]):
        with pytest.raises(FaultError):
            fault_from(bad, 0.0)
    assert parse_duration("200ms") == pytest.approx(0.2)
    assert parse_duration("1.5s") == 1.5 and parse_duration("2m") == 120 and parse_duration(3) == 3
    f = fault_from({"kind": "slow", "node": "a", "delay": "200ms", "jitter": "50ms"}, 0.0)
    assert (f.delay, f.jitter, f.expires) == (pytest.approx(0.2), pytest.approx(0.05), None)


def test_a_fault_with_a_duration_ends_by_itself() -> None:
    clock = FakeClock()
    s = state(clock)
    s.set(fault_from({"kind": "down", "node": "88.118", "duration": "10s"}, clock()))
    assert s.is_down("88.118") and s.next_expiry() == clock() + 10
    version = s.version
    clock.advance(9.9)
    assert s.is_down("88.118")
    clock.advance(0.1)
    assert not s.is_down("88.118") and s.active() == [] and s.version > version


def test_setting_a_kind_again_replaces_it_and_clear_takes_one_node() -> None:
    s = state()
    s.set(fault_from({"kind": "slow", "node": "a", "delay": 1}, 0))
    s.set(fault_from({"kind": "slow", "node": "a", "delay": 2}, 0))
    s.set(fault_from({"kind": "down", "node": "b"}, 0))
    s.set(fault_from({"kind": "partition", "node": "c", "peer": "a"}, 0))
    assert [(f.kind, f.node, f.delay) for f in s.active()] == [
        ("slow", "a", 2), ("down", "b", 0), ("partition", "c", 0)]
    gone = s.clear("a")  # its own faults and the partition touching it
    assert {f.kind for f in gone} == {"slow", "partition"}
    assert [f.kind for f in s.active()] == ["down"]
    assert s.clear() and s.active() == []


def test_a_partition_blocks_both_ways_and_only_its_pair() -> None:
    s = state()
    assert not s.blocked("recursive", "88.118")
    s.set(fault_from({"kind": "partition", "node": "recursive", "peer": "88.118"}, 0))
    assert s.blocked("recursive", "88.118") and s.blocked("88.118", "recursive")
    assert not s.blocked("recursive", "88.101") and not s.blocked("top", "88.118")


def test_errors_fail_a_seeded_share_and_slow_jitter_stays_in_bounds() -> None:
    a, b = state(), state()
    for s in (a, b):
        s.set(fault_from({"kind": "errors", "node": "n", "rate": 0.25}, 0))
    draws = [a.fails("n") for _ in range(4000)]
    assert draws == [b.fails("n") for _ in range(4000)]  # same seed, same requests fail
    assert 0.22 < sum(draws) / len(draws) < 0.28
    assert not a.fails("other")
    a.set(fault_from({"kind": "slow", "node": "n", "delay": "100ms", "jitter": "50ms"}, 0))
    delays = [a.delay("n") for _ in range(1000)]
    assert min(delays) >= 0.1 and max(delays) <= 0.15 and max(delays) > min(delays)
    assert a.delay("other") == 0.0


# ------------------------------------------------------------------ on a network

class FaultNet:
    def __init__(self, topo, host, clock, injector, http) -> None:
        self.topo, self.host, self.clock, self.injector, self.http = topo, host, clock, \
            injector, http
        self.examples = {s.code: f"{e.prefix}/SN{{:09d}}" for s in topo.secondaries
                         for e in topo.enterprises_of(s.code)[:1]}
        self.config = Config()

    def handle(self, node: str, n: int) -> str:
        return self.examples[node].format(n)

    def direct(self, node: str, n: int) -> str:
        return f"{self.topo.secondary(node).address.http_url}/api/handles/{self.handle(node, n)}"

    def via(self, node: str, n: int) -> str:
        return f"{self.topo.recursive.http_url}/api/handles/{self.handle(node, n)}"

    async def get(self, url: str, timeout: float = 10.0) -> tuple[int, dict]:
        async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.json(content_type=None)

    async def set(self, **spec) -> None:
        self.injector.state.set(fault_from(spec, self.clock()))
        await self.injector.update()

    async def clear(self, node: str | None = None) -> None:
        self.injector.state.clear(node)
        await self.injector.update()

    def start(self, url: str) -> asyncio.Future:
        """A GET in the background; ``held`` then waits until it waits in a fault."""
        self.injector.holding.clear()
        return asyncio.ensure_future(self.get(url))

    async def held(self) -> None:
        """Until a request started with ``start`` waits in a fault (down or slow)."""
        await asyncio.wait_for(self.injector.holding.wait(), 10)


@pytest.fixture
async def fnet(tmp_path: Path):
    clock = FakeClock()
    injector = Injector(FaultState(clock, random.Random(SEED)), clock)
    for _ in range(5):
        topo = free_topology("mini")
        logins = make_logins(topo)
        names = ["top", "recursive", *(s.code for s in topo.secondaries)]
        try:
            host = await start_nodes(topo, names, Config(), data_dir=tmp_path, logins=logins,
                                     store="memory", clock=clock, faults=injector)
            break
        except OSError:  # a port taken between the check and the bind
            injector.targets.clear()
    http = aiohttp.ClientSession()
    try:
        yield FaultNet(topo, host, clock, injector, http)
    finally:
        await http.close()
        await host.close()


def node_of(fnet: FaultNet, i: int) -> str:
    return fnet.topo.secondaries[i].code


async def test_down_hangs_clients_and_the_recursive_node_answers_503_at_its_rpc_timeout(
        fnet: FaultNet) -> None:
    node = node_of(fnet, 0)
    assert (await fnet.get(fnet.direct(node, 1)))[0] == 200
    await fnet.set(kind="down", node=node)
    with pytest.raises(asyncio.TimeoutError):  # no answer: the client's own timeout ends it
        await fnet.get(fnet.direct(node, 1), timeout=0.5)
    cold = fnet.start(fnet.via(node, 2))
    await fnet.held()  # the recursive node's call waits at the down node
    fnet.clock.advance(fnet.config.rpc.timeout)
    status, body = await asyncio.wait_for(cold, 10)
    assert status == 503 and body["responseCode"] == 3 and body["handle"] == fnet.handle(node, 2)
    await fnet.clear(node)
    assert (await fnet.get(fnet.direct(node, 1)))[0] == 200
    assert (await fnet.get(fnet.via(node, 2)))[0] == 200


async def test_refuse_closes_the_ports_and_clear_opens_them_again(fnet: FaultNet) -> None:
    node = node_of(fnet, 1)
    assert (await fnet.get(fnet.direct(node, 1)))[0] == 200  # a kept-alive connection too
    await fnet.set(kind="refuse", node=node)
    with pytest.raises(aiohttp.ClientError):  # the kept-alive connection was closed
        await fnet.get(fnet.direct(node, 1))
    with pytest.raises(aiohttp.ClientConnectorError):  # and a new one is refused
        await fnet.get(fnet.direct(node, 1))
    status, body = await fnet.get(fnet.via(node, 1))
    assert status == 503 and body["responseCode"] == 3
    await fnet.clear()
    assert (await fnet.get(fnet.direct(node, 1)))[0] == 200
    fnet.clock.advance(fnet.config.rpc.timeout)  # past the recursive node's retry window
    assert (await fnet.get(fnet.via(node, 3)))[0] == 200


async def test_slow_waits_the_delay_on_the_clock(fnet: FaultNet) -> None:
    node = node_of(fnet, 0)
    await fnet.set(kind="slow", node=node, delay="5s")
    req = fnet.start(fnet.direct(node, 1))
    await fnet.held()
    fnet.clock.advance(4.9)
    done, _ = await asyncio.wait({req}, timeout=0.3)
    assert not done, "answered before the delay had passed"
    fnet.clock.advance(0.1)
    assert (await asyncio.wait_for(req, 10))[0] == 200


async def test_errors_answer_a_seeded_share_503_handle_shaped(fnet: FaultNet) -> None:
    node = node_of(fnet, 0)
    await fnet.set(kind="errors", node=node, rate=0.5)
    statuses = []
    for i in range(40):
        status, body = await fnet.get(fnet.direct(node, 1))
        statuses.append(status)
        if status != 200:
            assert status == 503 and body["responseCode"] == 3 and "message" in body
    rng = random.Random(SEED)
    assert statuses.count(503) == sum(rng.random() < 0.5 for _ in range(40))
    assert 0 < statuses.count(503) < 40
    via = [(await fnet.get(fnet.via(node, i)))[0] for i in range(10)]  # RPC errors too
    assert set(via) == {200, 503}


async def test_a_partition_fails_rpc_between_its_pair_only(fnet: FaultNet) -> None:
    cut, other = node_of(fnet, 0), node_of(fnet, 1)
    await fnet.set(kind="partition", node="recursive", peer=cut)
    status, body = await fnet.get(fnet.via(cut, 1))
    assert status == 503 and "partitioned" in body["message"]
    assert (await fnet.get(fnet.via(other, 1)))[0] == 200
    assert (await fnet.get(fnet.direct(cut, 1)))[0] == 200  # HTTP to it still works
    await fnet.clear(cut)
    assert (await fnet.get(fnet.via(cut, 1)))[0] == 200


async def test_without_a_fault_nothing_is_in_the_path(fnet: FaultNet) -> None:
    node = node_of(fnet, 0)
    target = fnet.injector.targets[node]
    originals = dict(target.rpc._handlers)
    await fnet.set(kind="slow", node=node, delay=1)
    assert "dispatch" in vars(target.api) and target.rpc._handlers != originals
    await fnet.clear()
    assert "dispatch" not in vars(target.api) and target.api.dispatch.__func__ is NodeAPI.dispatch
    assert target.rpc._handlers == originals


async def test_a_timed_fault_ends_by_itself_and_its_wrappers_go(fnet: FaultNet) -> None:
    node = node_of(fnet, 0)
    target = fnet.injector.targets[node]
    await fnet.set(kind="down", node=node, duration="30s")
    req = fnet.start(fnet.direct(node, 1))
    await fnet.held()
    fnet.clock.advance(30)  # the expiry: the waiting request goes on, the wrappers go
    assert (await asyncio.wait_for(req, 10))[0] == 200
    await asyncio.wait_for(fnet.injector.expiry, 10)
    assert "dispatch" not in vars(target.api) and fnet.injector.state.active() == []


async def test_metrics_show_the_active_fault(fnet: FaultNet) -> None:
    node = node_of(fnet, 0)
    await fnet.set(kind="errors", node=node, rate=0.01)
    url = f"{fnet.topo.secondary(node).address.http_url}/metrics"
    async with fnet.http.get(url) as resp:
        text = await resp.text()
    assert f'idsim_fault_active{{kind="errors",node="{node}"}} 1.0' in text
    assert f'idsim_fault_active{{kind="down",node="{node}"}} 0.0' in text


# ------------------------------------------------------------------ control API

async def test_the_control_api_wants_its_token_and_loopback(fnet: FaultNet,
                                                           tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await control.start(fnet.injector, tmp_path, fnet.config.faults, host="0.0.0.0")
    runner, url = await control.start(fnet.injector, tmp_path, fnet.config.faults)
    try:
        token = (tmp_path / "control" / "token").read_text().strip()
        assert (tmp_path / "control" / "token").stat().st_mode & 0o777 == 0o600
        node = node_of(fnet, 0)
        spec = {"kind": "down", "node": node}
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": token}):
            async with fnet.http.post(f"{url}/faults", json=spec, headers=headers) as resp:
                assert resp.status == 401
        assert fnet.injector.state.active() == []
        auth = {"Authorization": f"Bearer {token}"}
        async with fnet.http.post(f"{url}/faults", json={"kind": "slow", "node": node},
                                  headers=auth) as resp:
            assert resp.status == 400 and "delay" in (await resp.json())["error"]
        async with fnet.http.post(f"{url}/faults", json={"kind": "down", "node": "nowhere"},
                                  headers=auth) as resp:
            assert resp.status == 404
        async with fnet.http.post(f"{url}/faults", json=spec, headers=auth) as resp:
            assert resp.status == 200
        async with fnet.http.get(f"{url}/faults", headers=auth) as resp:
            assert (await resp.json())["faults"] == [spec]
        with pytest.raises(asyncio.TimeoutError):
            await fnet.get(fnet.direct(node, 1), timeout=0.5)
        async with fnet.http.delete(f"{url}/faults", headers=auth) as resp:
            assert (await resp.json())["cleared"] == [spec]
        assert (await fnet.get(fnet.direct(node, 1)))[0] == 200
    finally:
        await control.stop(runner, tmp_path)
