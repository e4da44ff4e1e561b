"""/healthz and /readyz: liveness on every node; readiness only once a node has started and
its upstream answers (recursive: the top-level node's RPC; secondary: its prefixes held by the
top-level node; top: its store), with a Handle-shaped 503 saying why otherwise; peer checks
reused for ``observe.peer_check_ttl`` (FakeClock) and shared by concurrent requests; the
launcher's wait on /readyz (``topology.readiness.wait_ready``) naming what is not ready.
"""
from __future__ import annotations

import asyncio

import pytest

from network_fixtures import net  # noqa: F401  (fixture)
from resolver import health, identifiers
from resolver.clock import FakeClock
from resolver.config import Config
from resolver.store import open_store
from topology import readiness

TTL = Config().observe.peer_check_ttl


async def test_healthz_answers_on_every_node(net):
    for url, role in [(net.url, "recursive"), (net.top_url, "top"),
                      (net.node_url("88.118.8"), "secondary")]:
        status, body = await net.get(f"{url}/healthz")
        assert status == 200 and body["responseCode"] == 1 and body["role"] == role


async def test_every_node_is_ready_after_start_and_says_what_it_checked(net):
    for url in [net.url, net.top_url, *(s.address.http_url for s in net.topo.secondaries)]:
        status, body = await net.get(f"{url}/readyz")
        assert status == 200, body
        assert body["ready"] is True and body["checks"] and all(c["ok"] for c in body["checks"])
    _, body = await net.get(f"{net.node_url('88.118.8')}/readyz")
    n = len(net.topo.enterprises_of("88.118"))
    assert body["checks"][0]["detail"] == f"top-level node holds all {n} prefixes"


async def test_a_node_not_started_is_not_ready_and_says_so(client):
    """The conftest node was never started by the wiring (seeded and joined): 503, why."""
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["responseCode"] == 3 and body["ready"] is False
    assert body["message"] == f"not ready: {health.STARTING}"
    assert (await client.get("/healthz")).status == 200  # alive all the same


async def test_recursive_is_not_ready_once_the_top_rpc_is_gone(net):
    status, _ = await net.get(f"{net.url}/readyz")
    assert status == 200
    top_rpc = next(r for r in net.host.rpc_servers if r.port == net.topo.top.rpc_port)
    await top_rpc.close()
    status, _ = await net.get(f"{net.url}/readyz")
    assert status == 200  # the last result is reused within the TTL: polling is cheap
    net.clock.advance(TTL)
    status, body = await net.get(f"{net.url}/readyz")
    assert status == 503, body
    assert body["message"].startswith(f"not ready: top: {net.topo.top.rpc_addr} does not "
                                      "answer RPC")
    assert body["checks"] == [{"name": "top", "ok": False,
                               "detail": body["message"][len("not ready: top: "):]}]


async def test_secondary_is_not_ready_when_the_top_lost_its_prefix(net):
    url = net.node_url("88.118.8")
    assert (await net.get(f"{url}/readyz"))[0] == 200
    await net.top.store.delete(identifiers.make_key("0.NA/88.118.8", False))
    net.clock.advance(TTL)
    assert (await net.get(f"{url}/readyz"))[0] == 200  # verified a moment ago: not asked
    net.clock.advance(Config().observe.registration_recheck)
    status, body = await net.get(f"{url}/readyz")
    assert status == 503
    n = len(net.topo.enterprises_of("88.118"))
    assert body["message"] == (f"not ready: top: 1 of {n} prefixes not registered at the "
                               f"top-level node (first: 88.118.8)")
    # ...and another node's prefixes are all there
    assert (await net.get(f"{net.node_url('88.101.1')}/readyz"))[0] == 200


async def test_secondary_is_not_ready_when_the_top_does_not_answer_http(net):
    url = net.node_url("88.118.8")
    top_http = net.host.runners[list(net.host.nodes).index("top")]
    await top_http.cleanup()
    net.clock.advance(TTL)
    status, body = await net.get(f"{url}/readyz")
    assert status == 503
    assert body["message"].startswith(f"not ready: top: top-level node {net.top_url} "
                                      "unreachable")


async def test_top_is_not_ready_with_its_store_closed(tmp_path):
    store = open_store(f"lmdb:{tmp_path / 'top'}", Config().store)
    check = health.store_open(store)
    assert (await check()) == "store open, 0 records"
    await store.close()
    with pytest.raises(health.NotReady, match="store not open"):
        await check()


async def test_peer_checks_are_reused_within_the_ttl_and_shared_when_concurrent():
    clock = FakeClock()
    calls = 0
    gate = asyncio.Event()

    async def peer() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "answers"
    ready = health.Readiness({"peer": peer}, ttl=2.0, timeout=5.0, clock=clock)
    waiting = [asyncio.ensure_future(ready.verdict()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    verdicts = await asyncio.gather(*waiting)
    assert calls == 1 and all(v.ready for v in verdicts)
    clock.advance(1.9)
    assert (await ready.verdict()).ready and calls == 1
    clock.advance(0.1)
    assert (await ready.verdict()).ready and calls == 2


async def test_a_check_that_breaks_or_hangs_is_a_failed_check():
    async def broken() -> str:
        raise KeyError("x")

    async def hangs() -> str:
        await asyncio.Event().wait()
        return ""
    ready = health.Readiness({"a": broken, "b": hangs}, ttl=1.0, timeout=0.01,
                             clock=FakeClock())
    verdict = await ready.verdict()
    assert not verdict.ready
    assert verdict.reasons == ("a: KeyError: 'x'", "b: no answer within 0.01 s")


def test_decide():
    ok = health.CheckResult("top", True, "fine")
    bad = health.CheckResult("top", False, "gone")
    assert health.decide(True, [ok]).ready
    assert health.decide(False, [ok]).reasons == (health.STARTING,)
    assert health.decide(True, [ok, bad]).reasons == ("top: gone",)


async def test_the_launchers_wait_names_the_node_not_ready_and_why(client):
    url = f"http://{client.host}:{client.port}"
    with pytest.raises(RuntimeError) as err:
        await asyncio.to_thread(readiness.wait_ready, [url], Config(), 0)
    assert f"{url}: not ready: {health.STARTING}" in str(err.value)


async def test_a_restarted_top_has_the_prefixes_checked_again_at_once(net, monkeypatch):
    url = net.node_url("88.118.8")
    assert (await net.get(f"{url}/readyz"))[0] == 200
    await net.top.store.delete(identifiers.make_key("0.NA/88.118.8", False))
    monkeypatch.setattr(health, "BOOT", "a-new-top-process")  # as its /healthz says it
    net.clock.advance(TTL)
    status, body = await net.get(f"{url}/readyz")
    assert status == 503 and "(first: 88.118.8)" in body["message"]
