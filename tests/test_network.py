"""A whole ``mini`` network in the test's own event loop: top-level node, recursive node and the
three secondary nodes, real HTTP to the recursive node and real msgpack-RPC between the nodes.
The nodes run on a ``FakeClock``, so TTL expiry is stepped, never waited for; where a test needs
an order of events it awaits them (upstream calls held by an event, resolves watched).
"""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pyhandle.client.resthandleclient import RESTHandleClient
from pyhandle.handleclient import PyHandleClient

from network_fixtures import Net, basic_token, free_topology, net  # noqa: F401  (net: fixture)
from topology.cluster import make_logins
from topology.wiring import start_nodes
from resolver import errors, identifiers
from resolver.config import Config
from resolver.recursive import RecursiveNode
from resolver.rpc_auth import Method
from topology import demo

ENT = "88.118.8"  # the mini preset always has it
DEMO = f"{ENT}/{demo.suffix(0)}"


def demo_id(prefix: str, i: int = 0) -> str:
    return f"{prefix}/{demo.suffix(i)}"


def enterprise_of(n: Net, node_code: str, k: int = 0) -> str:
    return n.topo.enterprises_of(node_code)[k].prefix


async def register(n: Net, handle: str, url: str, ttl: int | None = None, *,
                   created: bool = True) -> None:
    value = {"index": 1, "type": "URL", "data": {"format": "string", "value": url}}
    if ttl is not None:
        value["ttl"] = ttl
    prefix = handle.partition("/")[0]
    async with n.http.put(f"{n.node_url(prefix)}/api/handles/{handle}", json={"values": [value]},
                          headers=n.auth(prefix)) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == (201 if created else 200), body
        assert body == {"responseCode": 1, "handle": handle}


# ----------------------------------------------------------------------------- resolving

async def test_resolve_through_recursive_matches_the_secondary(net: Net) -> None:
    status, via_recursive = await net.get(f"{net.url}/api/handles/{DEMO}")
    assert status == 200, via_recursive
    status, direct = await net.get(f"{net.node_url(ENT)}/api/handles/{DEMO}")
    assert status == 200, direct
    assert via_recursive == direct
    assert via_recursive["responseCode"] == 1 and via_recursive["handle"] == DEMO
    by_type = {v["type"]: v["data"]["value"] for v in via_recursive["values"]}
    assert by_type["URL"] == f"https://ex.com/{DEMO}"
    assert by_type["CHECKSUM"].startswith("sha1:")


async def test_every_node_is_reachable_through_recursive(net: Net) -> None:
    for s in net.topo.secondaries:
        h = demo_id(enterprise_of(net, s.code), 1)
        status, body = await net.get(f"{net.url}/api/handles/{h}")
        assert status == 200, (h, body)
        assert body["handle"] == h
        assert body["values"][0]["data"]["value"] == f"https://ex.com/{h}"


async def test_second_resolve_makes_no_upstream_call(net: Net) -> None:
    before = net.upstream()
    delegations = net.recursive.stats["delegation_calls"]
    status, first = await net.get(f"{net.url}/api/handles/{DEMO}")
    assert status == 200
    assert net.upstream() == before + 1
    assert net.recursive.stats["delegation_calls"] == delegations + 1
    status, second = await net.get(f"{net.url}/api/handles/{DEMO}")
    assert status == 200 and second == first
    assert net.upstream() == before + 1
    # another identifier under the same prefix: the delegation is cached, the answer is not
    status, _ = await net.get(f"{net.url}/api/handles/{demo_id(ENT, 1)}")
    assert status == 200
    assert net.upstream() == before + 2
    assert net.recursive.stats["delegation_calls"] == delegations + 1


async def test_a_get_probes_the_answer_cache_once(net: Net) -> None:
    """A cold GET counts one answer-cache miss (not one for the warm path and another for the
    resolution); the warm GET after it one hit and no miss."""
    answers = net.recursive.caches.answers
    url = f"{net.url}/api/handles/{demo_id(ENT, 9)}"
    misses, hits = answers.misses, answers.hits
    assert (await net.get(url))[0] == 200
    assert (answers.misses, answers.hits) == (misses + 1, hits)
    assert (await net.get(url))[0] == 200
    assert (answers.misses, answers.hits) == (misses + 1, hits + 1)
    status, body = await net.get(f"{net.url}/api/handles/{ENT}/NO-SUCH-PROBE")
    assert status == 404, body
    assert (answers.misses, answers.hits) == (misses + 2, hits + 1)
    assert (await net.get(f"{net.url}/api/handles/{ENT}/NO-SUCH-PROBE"))[0] == 404
    assert (answers.misses, answers.hits) == (misses + 2, hits + 2)  # the negative entry


async def test_ttl_expiry_refetches(net: Net) -> None:
    h = f"{ENT}/TTL-60"
    await register(net, h, "https://ex.com/ttl", ttl=60)
    url = f"{net.url}/api/handles/{h}"
    before = net.upstream()
    status, body = await net.get(url)
    assert status == 200, body
    assert min(v["ttl"] for v in body["values"]) == 60
    assert net.upstream() == before + 1
    net.clock.advance(53)  # before the prefetch window (the last cache.prefetch_window of it)
    assert (await net.get(url))[0] == 200
    assert net.upstream() == before + 1  # still fresh
    net.clock.advance(8)  # 61 s after the first answer
    status, again = await net.get(url)
    assert status == 200
    assert again["values"] == body["values"]
    assert net.upstream() == before + 2
    assert (await net.get(url))[0] == 200
    assert net.upstream() == before + 2  # cached again


async def test_changed_record_is_seen_after_ttl(net: Net) -> None:
    h = f"{ENT}/CHANGING"
    await register(net, h, "https://ex.com/v1", ttl=30)
    url = f"{net.url}/api/handles/{h}"
    assert (await net.get(url))[1]["values"][0]["data"]["value"] == "https://ex.com/v1"
    await register(net, h, "https://ex.com/v2", ttl=30, created=False)
    assert (await net.get(url))[1]["values"][0]["data"]["value"] == "https://ex.com/v1"  # cached
    net.clock.advance(30)
    assert (await net.get(url))[1]["values"][0]["data"]["value"] == "https://ex.com/v2"


async def test_auth_true_bypasses_the_cache(net: Net) -> None:
    url = f"{net.url}/api/handles/{DEMO}"
    assert (await net.get(url))[0] == 200
    before = net.upstream()
    for i in range(1, 4):
        status, body = await net.get(url, params={"auth": "true"})
        assert status == 200 and body["handle"] == DEMO
        assert net.upstream() == before + i
    # ...and refills it: a plain resolve after that is served from cache
    assert (await net.get(url))[0] == 200
    assert net.upstream() == before + 3


async def test_fresh_answer_refills_cache_with_new_record(net: Net) -> None:
    h = f"{ENT}/REFILL"
    await register(net, h, "https://ex.com/old")
    url = f"{net.url}/api/handles/{h}"
    assert (await net.get(url))[1]["values"][0]["data"]["value"] == "https://ex.com/old"
    await register(net, h, "https://ex.com/new", created=False)
    status, body = await net.get(url, params={"auth": "true"})
    assert body["values"][0]["data"]["value"] == "https://ex.com/new"
    before = net.upstream()
    assert (await net.get(url))[1]["values"][0]["data"]["value"] == "https://ex.com/new"
    assert net.upstream() == before


async def test_negative_caching(net: Net) -> None:
    h = f"{ENT}/NO-SUCH-THING"
    url = f"{net.url}/api/handles/{h}"
    before = net.upstream()
    for _ in range(2):
        status, body = await net.get(url)
        assert status == 404
        assert body["responseCode"] == 100 and body["handle"] == h
    assert net.upstream() == before + 1
    net.clock.advance(net.recursive.config.cache.negative_ttl - 0.5)
    assert (await net.get(url))[0] == 404
    assert net.upstream() == before + 1
    net.clock.advance(0.5)
    assert (await net.get(url))[0] == 404
    assert net.upstream() == before + 2


async def test_created_handle_visible_after_negative_ttl(net: Net) -> None:
    h = f"{ENT}/LATE"
    url = f"{net.url}/api/handles/{h}"
    assert (await net.get(url))[0] == 404
    await register(net, h, "https://ex.com/late")
    assert (await net.get(url))[0] == 404  # the miss is remembered...
    net.clock.advance(net.recursive.config.cache.negative_ttl)
    status, body = await net.get(url)  # ...for negative_ttl only
    assert status == 200 and body["values"][0]["data"]["value"] == "https://ex.com/late"


async def test_unknown_prefix_is_404(net: Net) -> None:
    for h in ("99.999/X", "88.999.1/X"):
        status, body = await net.get(f"{net.url}/api/handles/{h}")
        assert status == 404, body
        assert body["responseCode"] == 100
        assert isinstance(body.get("message"), str) and body["message"]
        assert body["handle"] == h


async def test_unknown_enterprise_under_known_node_is_404(net: Net) -> None:
    h = "88.118.999/X"  # delegated to node 88.118, which has no such handle
    status, body = await net.get(f"{net.url}/api/handles/{h}")
    assert status == 404 and body["responseCode"] == 100


async def test_case_insensitive_resolution_shares_the_cache(net: Net) -> None:
    h = f"{ENT}/{demo.suffix(2)}"
    status, upper = await net.get(f"{net.url}/api/handles/{h}")
    assert status == 200
    before = net.upstream()
    status, lower = await net.get(f"{net.url}/api/handles/{h.lower()}")
    assert status == 200
    assert lower["values"] == upper["values"]
    assert net.upstream() == before


# ----------------------------------------------------------------------------- coalescing

async def test_concurrent_http_requests_make_one_upstream_call(net: Net) -> None:
    h = demo_id(ENT, 5)
    url = f"{net.url}/api/handles/{h}"
    before = net.upstream()
    answers = await asyncio.gather(*(net.get(url) for _ in range(100)))
    assert net.upstream() == before + 1
    assert all(status == 200 for status, _ in answers)
    first = answers[0][1]
    assert first["handle"] == h and first["values"][0]["data"]["value"] == f"https://ex.com/{h}"
    assert all(body == first for _, body in answers)


async def test_concurrent_resolves_coalesce(net: Net) -> None:
    rec: RecursiveNode = net.recursive
    h = rec.parse(demo_id(ENT, 6))
    before, coalesced = net.upstream(), rec.stats["coalesced"]
    answers = await asyncio.gather(*(rec.resolve(h) for _ in range(100)))
    assert net.upstream() == before + 1
    assert rec.stats["coalesced"] == coalesced + 99
    assert len(set(answers)) == 1 and answers[0] is not None
    status, direct = await net.get(f"{net.node_url(ENT)}/api/handles/{h.text}")
    assert status == 200 and direct["handle"] == h.text
    assert rec._inflight == {}


async def test_concurrent_misses_coalesce(net: Net) -> None:
    rec: RecursiveNode = net.recursive
    h = rec.parse(f"{ENT}/MISSING-CONCURRENT")
    before = net.upstream()
    results = await asyncio.gather(*(rec.resolve(h) for _ in range(50)), return_exceptions=True)
    assert net.upstream() == before + 1
    assert all(isinstance(r, errors.HandleError) and r.code == 100 for r in results)


# ----------------------------------------------------------------------------- failures

def rpc_server_of(n: Net, code: str):
    port = n.topo.secondary(code).address.rpc_port
    return next(r for r in n.host.rpc_servers if r.port == port)


async def test_unreachable_secondary_is_503(net: Net) -> None:
    code = "88.201"
    ent = enterprise_of(net, code)
    cached = demo_id(ent, 0)
    assert (await net.get(f"{net.url}/api/handles/{cached}"))[0] == 200
    await rpc_server_of(net, code).close()

    h = demo_id(ent, 1)  # not cached
    status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{h}"), 10)
    assert status == 503, body
    assert body["responseCode"] == errors.SERVER_TOO_BUSY
    assert isinstance(body.get("message"), str) and body["message"]
    assert body["handle"] == h
    # the failure is not remembered as "not found": still 503
    assert (await asyncio.wait_for(net.get(f"{net.url}/api/handles/{h}"), 10))[0] == 503
    # what is in cache is still answered, and other nodes are unaffected
    assert (await net.get(f"{net.url}/api/handles/{cached}"))[0] == 200
    assert (await net.get(f"{net.url}/api/handles/{DEMO}"))[0] == 200


async def test_unreachable_secondary_serves_stale(net: Net) -> None:
    code = "88.201"
    h = demo_id(enterprise_of(net, code), 2)
    status, fresh = await net.get(f"{net.url}/api/handles/{h}")
    assert status == 200
    await rpc_server_of(net, code).close()
    net.clock.advance(min(v["ttl"] for v in fresh["values"]) + 1)  # expired, within stale window
    stale_before = net.recursive.stats["stale"]
    status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{h}"), 10)
    assert status == 200, body
    stale_ttl = net.recursive.config.cache.stale_answer_ttl  # RFC 8767: stale answers' TTL
    assert body["values"] == [{**v, "ttl": stale_ttl} for v in fresh["values"]]
    assert net.recursive.stats["stale"] == stale_before + 1
    net.clock.advance(net.recursive.config.cache.answer_stale)  # past the stale window
    status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{h}"), 10)
    assert status == 503 and body["responseCode"] == 3


async def test_unreachable_secondary_in_batch(net: Net) -> None:
    code = "88.201"
    h = demo_id(enterprise_of(net, code), 3)
    await rpc_server_of(net, code).close()
    async with net.http.post(f"{net.url}/api/batch/resolve",
                             json={"handles": [DEMO, h]}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [r["responseCode"] for r in body["results"]] == [1, 3]


# ----------------------------------------------------------------------------- statistics

async def reported(n: Net) -> None:
    """Return once every secondary node's report loop has reported to the top-level node."""
    codes = {s.code for s in n.topo.secondaries}
    done = asyncio.Event()
    rpc = next(r for r in n.host.rpc_servers if r.port == n.topo.top.rpc_port)
    report = rpc._handlers["report"]

    def watched(caller, code: str, stats: dict) -> None:
        report.fn(caller, code, stats)
        if codes <= n.top.reports.keys():
            done.set()
    rpc._handlers["report"] = Method(watched, report.roles)
    if not codes <= n.top.reports.keys():
        await asyncio.wait_for(done.wait(), 10)  # a guard against a hang, not an order


async def test_top_stats_report_the_network(net: Net) -> None:
    counts = net.topo.counts()
    await reported(net)
    status, body = await net.get(f"{net.top_url}/api/stats")
    assert status == 200
    totals = body["totals"]
    assert body["responseCode"] == 1
    assert totals["secondaryNodes"] == counts["secondary_nodes"] == 3
    assert totals["industries"] == counts["industries_served"] == 3
    assert totals["enterprises"] == counts["enterprises"] == 12
    assert totals["identifiers"] == counts["identifiers"]
    rows = {r["node"]: r for r in body["nodes"]}
    assert set(rows) == {s.code for s in net.topo.secondaries}
    for code, k in net.topo.enterprises_per_node().items():
        assert rows[code]["enterprises"] == k
        assert rows[code]["identifiers"] == k * net.topo.identifiers_per_enterprise
        assert rows[code]["httpUrl"] == net.topo.secondary(code).address.http_url
        assert rows[code]["industry"] == net.topo.secondary(code).industry


async def test_top_stats_count_resolutions(net: Net) -> None:
    for task in net.host.tasks:  # no report loop: the reports below are the only ones
        task.cancel()
    await asyncio.gather(*net.host.tasks, return_exceptions=True)
    net.top.reports.clear()
    for _ in range(3):
        await net.get(f"{net.url}/api/handles/{DEMO}", params={"auth": "true"})
    net.top.report("recursive", net.recursive.report_stats())
    net.top.report("88.118", net.host.nodes["88.118"].report_stats())
    status, body = await net.get(f"{net.top_url}/api/stats")
    assert status == 200
    assert body["totals"]["recursiveResolutions"] == 3
    assert body["recursive"]["recursive"]["upstreamCalls"] == 3
    row = next(r for r in body["nodes"] if r["node"] == "88.118")
    assert row["resolutions"] == 3


async def test_recursive_stats_endpoint(net: Net) -> None:
    await net.get(f"{net.url}/api/handles/{DEMO}")
    await net.get(f"{net.url}/api/handles/{DEMO}")
    status, body = await net.get(f"{net.url}/api/stats")
    assert status == 200
    assert body["role"] == "recursive" and body["node"] == "recursive"
    assert body["upstreamCalls"] == net.upstream() == 1
    assert body["cacheHits"] == 1 and body["cacheEntries"] == 1
    assert body["resolutions"] == 2


# ----------------------------------------------------------------------------- writes through it

async def test_writes_through_the_recursive_node_reach_the_serving_node(net: Net) -> None:
    """One URL for everything: PUT and DELETE at the recursive node are passed to the node
    serving the prefix, with the client's credentials, and the node's answer comes back."""
    h = f"{ENT}/WRITE-HERE"
    status, _ = await net.get(f"{net.url}/api/handles/{h}")
    assert status == 404  # and now "not found" is cached here...
    body = {"values": [{"index": 1, "type": "URL", "data": "https://ex.com/x"}]}
    async with net.http.put(f"{net.url}/api/handles/{h}?overwrite=false", json=body,
                            headers=net.auth(ENT)) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json()) == {"responseCode": 1, "handle": h}
    # ...but the write dropped it: the next resolve here sees the new record
    status, doc = await net.get(f"{net.url}/api/handles/{h}")
    assert status == 200 and doc["values"][0]["data"]["value"] == "https://ex.com/x"
    assert (await net.get(f"{net.node_url(ENT)}/api/handles/{h}"))[0] == 200
    # the serving node's refusals come back as they are (here: 409/101, then 401 + challenge)
    async with net.http.put(f"{net.url}/api/handles/{h}?overwrite=false", json=body,
                            headers=net.auth(ENT)) as resp:
        assert resp.status == 409 and (await resp.json())["responseCode"] == 101
    async with net.http.put(f"{net.url}/api/handles/{ENT}/NO-LOGIN", json=body) as resp:
        assert resp.status == 401 and "Basic" in resp.headers["WWW-Authenticate"]
        assert (await resp.json())["responseCode"] == 402
    async with net.http.delete(f"{net.url}/api/handles/{h}", headers=net.auth(ENT)) as resp:
        assert resp.status == 200
    assert (await net.get(f"{net.url}/api/handles/{h}"))[0] == 404


async def test_batch_registration_at_the_recursive_node_is_refused(net: Net) -> None:
    async with net.http.post(f"{net.url}/api/batch/register", json={"handles": []}) as resp:
        assert resp.status == 400
        doc = await resp.json(content_type=None)
    assert doc["responseCode"] == errors.SERVER_NOT_RESP and "batch" in doc["message"]


async def test_pyhandle_writes_through_the_recursive_node(net: Net) -> None:
    """pyhandle, unchanged, given only the recursive node's URL and an enterprise's login."""
    login = net.logins["enterprises"][ENT]
    h = f"{ENT}/PYHANDLE-VIA-RECURSIVE"

    def work():
        client = PyHandleClient("rest").instantiate_with_username_and_password(
            net.url, login["username"], login["secret"])
        client.register_handle(h, "https://ex.com/one")
        client.modify_handle_value(h, URL="https://ex.com/two")
        url = client.get_value_from_handle(h, "URL")
        client.delete_handle(h)
        return url, client.retrieve_handle_record(h)

    url, gone = await asyncio.to_thread(work)
    assert url == "https://ex.com/two" and gone is None


# ----------------------------------------------------------------------------- batch resolve

async def test_batch_resolve_through_recursive(net: Net) -> None:
    other = demo_id(enterprise_of(net, "88.101"), 4)
    handles = [DEMO, other, f"{ENT}/NOPE", "99.99/X", "no-slash"]
    async with net.http.post(f"{net.url}/api/batch/resolve", json={"handles": handles}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["responseCode"] == 1
    results = body["results"]
    assert [r["responseCode"] for r in results] == [1, 1, 100, 100, 301]  # no '/': as a GET
    assert [r["handle"] for r in results] == handles
    _, direct = await net.get(f"{net.node_url(ENT)}/api/handles/{DEMO}")
    assert results[0]["values"] == direct["values"]
    before = net.upstream()
    async with net.http.post(f"{net.url}/api/batch/resolve", json={"handles": handles[:2]}) as resp:
        assert resp.status == 200
    assert net.upstream() == before  # both answered from cache


# ----------------------------------------------------------------------------- pyhandle

async def test_pyhandle_resolves_through_recursive(net: Net) -> None:
    def work():
        client = RESTHandleClient(handle_server_url=net.url, HTTPS_verify=False)
        rec = client.retrieve_handle_record(DEMO)
        url = client.get_value_from_handle(DEMO, "URL")
        missing = client.retrieve_handle_record(f"{ENT}/NOT-THERE")
        full = client.retrieve_handle_record_json(DEMO)
        return rec, url, missing, full

    rec, url, missing, full = await asyncio.to_thread(work)
    assert rec["URL"] == f"https://ex.com/{DEMO}"
    assert rec["CHECKSUM"].startswith("sha1:")
    assert url == f"https://ex.com/{DEMO}"
    assert missing is None
    assert full["handle"] == DEMO and full["responseCode"] == 1


async def test_pyhandle_wrapper_client(net: Net) -> None:
    h = demo_id(enterprise_of(net, "88.201"), 0)

    def work():
        # the wrapper's own client always reads hdl.handle.net; use the instance it returns
        client = PyHandleClient("rest").instantiate_for_read_access(handle_server_url=net.url)
        return client.retrieve_handle_record(h), client.get_value_from_handle(h, "URL")

    rec, url = await asyncio.to_thread(work)
    assert rec["URL"] == url == f"https://ex.com/{h}"


# ----------------------------------------------------------------------------- TTLs in answers

# ----------------------------------------------------------------------------- top-level node down

async def test_top_down_cached_delegations_still_work(net: Net) -> None:
    assert (await net.get(f"{net.url}/api/handles/{DEMO}"))[0] == 200  # delegation for ENT cached
    top_rpc = next(r for r in net.host.rpc_servers if r.port == net.topo.top.rpc_port)
    await top_rpc.close()
    status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{demo_id(ENT, 7)}"), 10)
    assert status == 200, body
    other = demo_id(enterprise_of(net, "88.201"), 7)  # its delegation is not cached
    status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{other}"), 10)
    assert status == 503, body
    assert body["responseCode"] == errors.SERVER_TOO_BUSY


def delegation_expiry(n: Net, prefix: str) -> float:
    hit = n.recursive.caches.delegations.get(identifiers.make_key(prefix), n.clock())
    assert hit is not None and not hit.stale
    return hit.expires_at


async def close_top_rpc(n: Net) -> None:
    await next(r for r in n.host.rpc_servers if r.port == n.topo.top.rpc_port).close()


async def test_top_down_resolves_through_a_stale_delegation(net: Net) -> None:
    """The delegation of a prefix just expired and the top-level node is down: the site still
    in the delegation cache (its stale window) is used, not a 503."""
    assert (await net.get(f"{net.url}/api/handles/{DEMO}"))[0] == 200
    net.clock.set(delegation_expiry(net, ENT) + 1)
    await close_top_rpc(net)
    h = demo_id(ENT, 7)  # not cached: the node serving ENT must be asked
    status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{h}"), 10)
    assert status == 200, body
    assert body["handle"] == h and body["values"][0]["data"]["value"] == f"https://ex.com/{h}"
    # past the stale window there is nothing left to go on
    net.clock.advance(net.recursive.config.cache.delegation_stale)
    h = demo_id(ENT, 8)
    status, body = await asyncio.wait_for(net.get(f"{net.url}/api/handles/{h}"), 10)
    assert status == 503 and body["responseCode"] == errors.SERVER_TOO_BUSY


async def test_top_down_writes_through_a_stale_delegation(net: Net) -> None:
    """A write sent to the recursive node finds the serving node the same way."""
    assert (await net.get(f"{net.url}/api/handles/{DEMO}"))[0] == 200
    net.clock.set(delegation_expiry(net, ENT) + 1)
    await close_top_rpc(net)
    h = f"{ENT}/WRITTEN-WHILE-TOP-DOWN"
    body = {"values": [{"index": 1, "type": "URL", "data": "https://ex.com/w"}]}
    async with net.http.put(f"{net.url}/api/handles/{h}", json=body,
                            headers=net.auth(ENT)) as resp:
        assert resp.status == 201, await resp.text()
    status, doc = await net.get(f"{net.node_url(ENT)}/api/handles/{h}")
    assert status == 200 and doc["values"][0]["data"]["value"] == "https://ex.com/w"


# ----------------------------------------------------------------------------- known bugs

async def test_coalesced_request_survives_leader_disconnect(net: Net) -> None:
    """The client whose request started the upstream call goes away (its handler is
    cancelled) while another request waits on the same call: that one still gets the answer."""
    rpc = rpc_server_of(net, "88.118")
    lookup = rpc._handlers["resolve"]
    asked, release = asyncio.Event(), asyncio.Event()

    async def held(caller, text: str):
        asked.set()
        await release.wait()
        return lookup.fn(caller, text)
    rpc._handlers["resolve"] = Method(held, lookup.roles)  # answers when the test says so
    rec = net.recursive
    resolve = rec.resolve
    entered: asyncio.Queue[str] = asyncio.Queue()
    cancelled = asyncio.Event()

    async def watched(handle, **kw):
        entered.put_nowait(handle.text)  # then runs up to its first wait before anything else
        try:
            return await resolve(handle, **kw)
        except asyncio.CancelledError:
            cancelled.set()
            raise
    rec.resolve = watched
    rec.fast_miss = None  # aiohttp's path, whose handler is cancelled (fast_miss: test_fast_miss)
    h = demo_id(ENT, 8)
    url = f"{net.url}/api/handles/{h}"
    leader = asyncio.ensure_future(net.get(url))
    assert await entered.get() == h
    await asked.wait()
    patient = asyncio.ensure_future(net.get(url))
    assert await entered.get() == h
    assert rec.stats["coalesced"] == 1
    leader.cancel()  # the leading client disconnects...
    with pytest.raises(asyncio.CancelledError):
        await leader
    await asyncio.wait_for(cancelled.wait(), 10)  # ...and its handler is cancelled
    release.set()
    status, body = await asyncio.wait_for(patient, 10)  # a guard against a hang, not an order
    assert status == 200, body
    assert body["handle"] == h and body["values"][0]["data"]["value"] == f"https://ex.com/{h}"
    assert net.upstream() == 1


async def test_prefix_handle_resolves_through_recursive(net: Net) -> None:
    status, direct = await net.get(f"{net.top_url}/api/handles/0.NA/{ENT}")
    assert status == 200
    status, body = await net.get(f"{net.url}/api/handles/0.NA/{ENT}")
    assert status == 200, body
    assert body["values"] == direct["values"]


async def test_restart_on_other_ports_moves_the_delegations(tmp_path) -> None:
    """A data directory started again with other ports (``idsim up --port``): the top-level
    node's HS_SITE records follow the nodes, and the logins they hold stay the same."""
    first = free_topology()
    logins = make_logins(first)
    names = ["top", "recursive", *(s.code for s in first.secondaries)]
    host = await start_nodes(first, names, Config(), data_dir=tmp_path, logins=logins,
                             store="lmdb")
    await host.close()
    second = free_topology()
    assert second.top.http_port != first.top.http_port
    host = await start_nodes(second, names, Config(), data_dir=tmp_path, logins=logins,
                             store="lmdb")
    try:
        code = second.secondaries[0].code
        node_url = second.secondary(code).address.http_url
        admin = logins["nodes"][code]
        auth = {"Authorization": basic_token(admin["username"], admin["secret"])}
        async with aiohttp.ClientSession() as s:
            # a handle under the node's own prefix: delegated by 0.NA/<node> alone
            async with s.put(f"{node_url}/api/handles/{code}/NODE-INFO", headers=auth,
                             json={"values": [{"index": 1, "type": "URL",
                                               "data": "https://ex.com/node"}]}) as r:
                assert r.status == 201, await r.text()
            async with s.get(f"{second.recursive.http_url}/api/handles/{code}/NODE-INFO") as r:
                assert r.status == 200, await r.text()
    finally:
        await host.close()


async def test_prefix_made_by_the_admin_api_resolves_through_the_network(net: Net) -> None:
    """A prefix allocated at a secondary node is announced to the top-level node, so the
    recursive node finds it; its new login registers there at once."""
    code = net.topo.secondaries[0].code
    node_url = net.topo.secondary(code).address.http_url
    admin = net.logins["nodes"][code]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{node_url}/api/admin/prefixes", json={"prefix": f"{code}.777"},
                          headers={"Authorization": basic_token(admin["username"],
                                                                admin["secret"])}) as r:
            assert r.status == 201, await r.text()
            login = await r.json()
        async with s.put(f"{node_url}/api/handles/{code}.777/FIRST",
                         json={"values": [{"index": 1, "type": "URL", "data": "https://ex.com/1"}]},
                         headers={"Authorization": basic_token(login["username"],
                                                               login["secret"])}) as r:
            assert r.status == 201, await r.text()
        async with s.get(f"{net.topo.recursive.http_url}/api/handles/{code}.777/FIRST") as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["values"][0]["data"]["value"] == "https://ex.com/1"
        # the top-level node holds the new prefix's record, pointing at the node that serves it
        async with s.get(f"{net.topo.top.http_url}/api/handles/0.NA/{code}.777?type=HS_SITE") as r:
            assert r.status == 200, await r.text()
            site = (await r.json())["values"][0]["data"]["value"]
            assert site["servers"][0]["interfaces"][0]["port"] == \
                net.topo.secondary(code).address.http_port
