"""Failover at the recursive node: peer health, primary -> mirror, top -> standby top.

``resolver.peer_health`` is checked by hand with a ``FakeClock``. The failovers run on an
in-process ``mini`` network (``network_fixtures.net``): a second RPC server serving a node's
own read methods on another port stands in for its mirror (``resolver.mirror.MirrorNode``
serves the same ``resolve``) or for the standby top-level node (the same ``delegate``), and
the primary's RPC server is closed to take it down.
"""
from __future__ import annotations

import asyncio

import pytest

from benchmarks.procs import free_port
from resolver import errors, identifiers
from resolver.config import CacheConfig
from resolver.metrics import NodeMetrics
from resolver.peer_health import PeerHealth
from resolver.recursive import RecursiveNode
from resolver.resolution import Site
from resolver.rpc import RpcServer
from resolver.rpc_auth import Keyring, Trust
from network_fixtures import FakeClock, Net, net  # noqa: F401  (net is a fixture)
from test_network import DEMO, ENT, demo_id, rpc_server_of

GUARD = 10.0  # s: a bound against a hang, never an ordering device
A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


def health(**kw) -> PeerHealth:
    config = CacheConfig(**{"peer_failures": 2, "peer_backoff": 1.0, "peer_backoff_max": 8.0,
                            **kw})
    return PeerHealth(config, FakeClock(1000.0))


# ----------------------------------------------------------------------------- peer_health

def test_healthy_peers_are_asked_in_order() -> None:
    h = health()
    assert h.next([A, B]) == A
    assert h.next([A, B], [A]) == B
    assert h.next([A, B], [A, B]) is None


def test_consecutive_failures_put_a_peer_in_backoff_and_success_resets() -> None:
    h = health()
    h.failed(A)
    assert h.next([A, B]) == A  # one failure: still tried first
    h.ok(A)
    h.failed(A)
    assert h.next([A, B]) == A  # the count was reset by the answer
    h.failed(A)
    assert h.in_backoff(A) and h.next([A, B]) == B


def test_backoff_window_then_one_probe_at_a_time() -> None:
    h = health()
    h.failed(A), h.failed(A)
    h.clock.advance(0.999)
    assert h.next([A, B]) == B  # not until the window ends
    h.clock.advance(0.001)
    assert h.next([A, B]) == A  # the probe is claimed...
    assert h.next([A, B]) == B  # ...so the next caller skips A while it runs
    h.ok(A)
    assert h.next([A, B]) == A and not h.in_backoff(A)


def test_backoff_doubles_per_failure_and_is_capped() -> None:
    h = health()
    windows = []
    for _ in range(7):
        h.failed(A)
        failures, until = h.state(A)
        if failures >= 2:
            windows.append(until - h.clock())
    assert windows == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_failed_probe_starts_a_longer_window() -> None:
    h = health()
    h.failed(A), h.failed(A)
    h.clock.advance(1.0)
    assert h.next([A, B]) == A
    h.failed(A)  # the probe failed: 2 s now
    assert h.next([A, B]) == B
    h.clock.advance(1.999)
    assert h.next([A, B]) == B
    h.clock.advance(0.001)
    assert h.next([A, B]) == A


def test_when_every_peer_is_in_backoff_they_are_tried_anyway() -> None:
    h = health()
    for addr in (A, B):
        h.failed(addr), h.failed(addr)
    assert h.next([A, B]) == A
    assert h.next([A, B], [A]) == B
    assert h.next([A, B], [A, B]) is None
    assert h.next([A]) == A  # a lone peer is never left out


def test_release_frees_a_claimed_probe() -> None:
    h = health()
    h.failed(A), h.failed(A)
    h.clock.advance(1.0)
    assert h.next([A, B]) == A
    h.release(A)  # e.g. the caller was cancelled
    assert h.next([A, B]) == A


# ----------------------------------------------------------------------------- in process

class Calls:
    """Wraps a RecursiveNode's ``peer``: records which address each call went to, whether
    awaited (``call``) or sent by callback (``call_soon``, the HTTP fast path's misses)."""

    def __init__(self, node: RecursiveNode) -> None:
        self.addrs: list[str] = []
        self._peer = node.peer
        node.peer = self

    def __call__(self, addr: str) -> "_Recorded":
        return _Recorded(self, addr, self._peer(addr))


class _Recorded:
    def __init__(self, calls: Calls, addr: str, client) -> None:
        self.calls, self.addr, self.client = calls, addr, client

    async def call(self, *args):
        self.calls.addrs.append(self.addr)
        return await self.client.call(*args)

    def call_soon(self, *args) -> bool:
        sent = self.client.call_soon(*args)
        if sent:
            self.calls.addrs.append(self.addr)
        return sent


async def serve_copy(n: Net, name: str) -> RpcServer:
    """Another RPC server with node ``name``'s read methods: its mirror (or standby)."""
    node = n.host.nodes[name]
    keyring = Keyring.from_logins(n.logins)
    handlers = {k: v for k, v in node.rpc_handlers().items() if k in ("resolve", "delegate")}
    for _ in range(20):
        try:
            return await RpcServer(handlers, node.config.rpc, clock=n.clock,
                                   trust=Trust(node.name, keyring)).start("127.0.0.1",
                                                                          free_port())
        except OSError:  # a port race: another one
            continue
    raise RuntimeError("no free port for the mirror")


def with_mirror(n: Net, prefix: str, mirror_rpc: str) -> Site:
    """Make the recursive node's delegation of ``prefix`` list a mirror (what the top-level
    node's HS_SITE lists once mirrors are wired); its HTTP URL leads nowhere."""
    key = identifiers.make_key(prefix)
    site = n.recursive.caches.delegations.get(key, n.clock()).value
    site = Site(site.prefix, site.http_url, site.rpc_addr, (("http://127.0.0.1:9", mirror_rpc),))
    n.recursive.caches.delegations.put(key, site, ttl=3600, now=n.clock())
    return site


async def test_resolve_fails_over_to_the_mirror_then_skips_the_primary(net: Net) -> None:
    assert (await net.get(f"{net.url}/api/handles/{DEMO}"))[0] == 200
    mirror = await serve_copy(net, "88.118")
    try:
        site = with_mirror(net, ENT, f"127.0.0.1:{mirror.port}")
        await rpc_server_of(net, "88.118").close()
        calls = Calls(net.recursive)
        cfg = net.recursive.config.cache
        for i in range(1, 1 + cfg.peer_failures):  # never resolved before: must be asked
            status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/"
                                                          f"{demo_id(ENT, i)}"), GUARD)
            assert status == 200 and body["handle"] == demo_id(ENT, i)
        assert calls.addrs == [site.rpc_addr, site.mirrors[0][1]] * cfg.peer_failures
        assert net.recursive.stats["failover_node"] == cfg.peer_failures
        # the primary is in back-off: not tried until the window ends
        calls.addrs.clear()
        assert (await net.get(f"{net.url}/api/handles/{demo_id(ENT, 3)}"))[0] == 200
        assert calls.addrs == [site.mirrors[0][1]]
        net.clock.advance(cfg.peer_backoff)  # the window has passed: one probe of the primary
        calls.addrs.clear()
        assert (await net.get(f"{net.url}/api/handles/{demo_id(ENT, 4)}"))[0] == 200
        assert calls.addrs == [site.rpc_addr, site.mirrors[0][1]]
        text = NodeMetrics(net.recursive).exposition().decode()
        assert 'idsim_failovers_total{node="recursive",process="0",to="mirror"} 4.0' in text
    finally:
        await mirror.close()


async def test_writes_go_to_the_primary_not_the_mirror(net: Net) -> None:
    assert (await net.get(f"{net.url}/api/handles/{DEMO}"))[0] == 200
    mirror = await serve_copy(net, "88.118")
    try:
        with_mirror(net, ENT, f"127.0.0.1:{mirror.port}")
        await rpc_server_of(net, "88.118").close()  # reads fail over; writes use HTTP
        h = f"{ENT}/WRITTEN-WITH-A-MIRROR"
        body = {"values": [{"index": 1, "type": "URL", "data": "https://ex.com/w"}]}
        async with net.http.put(f"{net.url}/api/handles/{h}", json=body,
                                headers=net.auth(ENT)) as resp:
            assert resp.status == 201, await resp.text()
        assert net.host.nodes["88.118"].store.get(identifiers.make_key(h)) is not None
        status, got = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{h}"), GUARD)
        assert status == 200 and got["values"][0]["data"]["value"] == "https://ex.com/w"
    finally:
        await mirror.close()


async def test_standby_top_serves_delegations_and_prefix_records(net: Net) -> None:
    standby = await serve_copy(net, "top")
    keyring = Keyring.from_logins(net.logins)
    node = RecursiveNode("recursive", net.topo.top.rpc_addr, net.recursive.config,
                         clock=net.clock, trust=Trust("recursive", keyring),
                         standby_tops=[f"127.0.0.1:{standby.port}"])
    try:
        await next(r for r in net.host.rpc_servers if r.port == net.topo.top.rpc_port).close()
        calls = Calls(node)
        answer = await asyncio.wait_for(node.resolve(node.parse(DEMO)), GUARD)
        assert answer.rows[0][3] == f"https://ex.com/{DEMO}"
        assert calls.addrs[:2] == [net.topo.top.rpc_addr, f"127.0.0.1:{standby.port}"]
        record = await asyncio.wait_for(node.resolve(node.parse(f"0.NA/{ENT}")), GUARD)
        assert any(r[1] == "HS_SITE" for r in record.rows)
        assert node.stats["failover_top"] == 2
    finally:
        await node.close()
        await standby.close()


async def test_without_a_standby_the_top_down_is_a_503(net: Net) -> None:
    """The same as above without the standby: nothing answers (a new prefix is not found)."""
    node = RecursiveNode("recursive", net.topo.top.rpc_addr, net.recursive.config,
                         clock=net.clock, trust=Trust("recursive",
                                                      Keyring.from_logins(net.logins)))
    try:
        await next(r for r in net.host.rpc_servers if r.port == net.topo.top.rpc_port).close()
        with pytest.raises(errors.PeerUnavailable):
            await asyncio.wait_for(node.resolve(node.parse(DEMO)), GUARD)
    finally:
        await node.close()
