"""``GET /metrics`` as Prometheus and an operator rely on it: every node answers the contract's
names in the text format prometheus_client parses, labels stay bounded however many
identifiers are resolved, and the counters move with the requests made (hits and misses,
errors, upstream calls and failures). Processes sharing a port answer each other's series.
The in-process ``mini`` network (real HTTP and RPC, a FakeClock) serves the requests.
"""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from network_fixtures import FakeClock, Net, free_topology, net  # noqa: F401  (net: fixture)
from resolver import errors, metrics_share
from resolver.config import Config
from resolver.metrics import NodeMetrics
from resolver.nodes import SecondaryNode
from resolver.recursive import RecursiveNode
from resolver.store import open_store
from resolver.web import NodeAPI
from topology import demo
from topology.cluster import Cluster, make_logins
from topology.presets import get_preset
from topology.prometheus_config import scrape_config
from topology.wiring import start_nodes

ENT = "88.118.8"
COMMON = {"idsim_requests", "idsim_responses", "idsim_request_duration_seconds",
          "idsim_records", "idsim_build_info"}
CACHE = {"idsim_cache_entries", "idsim_cache_requests", "idsim_cache_hits",
         "idsim_cache_stale_served", "idsim_cache_evictions",
         "idsim_upstream_request_duration_seconds", "idsim_upstream_failures"}


def parse(text: str) -> dict[str, list]:
    """family name -> its samples."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict, sample: str, **labels) -> float:
    """The sum of ``sample``'s values whose labels include ``labels`` (0 when none)."""
    family = next((f for f in families.values() if any(s.name == sample for s in f)), [])
    return sum(s.value for s in family if s.name == sample
               and all(s.labels.get(k) == v for k, v in labels.items()))


async def scrape(n: Net, url: str) -> dict[str, list]:
    async with n.http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await resp.text())


def node_urls(n: Net) -> dict[str, str]:
    return {"recursive": n.url, "top": n.top_url,
            **{s.code: s.address.http_url for s in n.topo.secondaries}}


async def test_every_node_serves_the_contract_names(net: Net) -> None:
    for name, url in node_urls(net).items():
        fams = await scrape(net, url)
        expected = COMMON | (CACHE if name == "recursive" else set())
        assert expected <= set(fams), (name, expected - set(fams))
        assert {s.labels["node"] for s in fams["idsim_requests"]} == {name}
        assert value(fams, "idsim_build_info") == 1
        if name != "recursive":
            assert value(fams, "idsim_records", node=name) > 0  # the demo data is stored


async def test_labels_stay_bounded_however_many_identifiers(net: Net) -> None:
    prefixes = [e.prefix for e in net.topo.enterprises]

    async def resolve_many(start: int, count: int) -> None:
        for i in range(start, start + count):
            prefix = prefixes[i % len(prefixes)]
            for url in (net.url, net.node_url(prefix)):
                for handle in (f"{prefix}/{demo.suffix(i % 5)}", f"{prefix}/NO-SUCH-{i}"):
                    async with net.http.get(f"{url}/api/handles/{handle}") as resp:
                        assert resp.status in (200, 404)
                async with net.http.get(f"{url}/{prefix}/REDIRECT-{i}") as resp:
                    assert resp.status == 404

    await resolve_many(0, len(prefixes))  # every prefix, so every peer, once
    for url in node_urls(net).values():
        await scrape(net, url)  # scrapes are requests too (op "other")
    before = {name: sum(len(f) for f in (await scrape(net, url)).values())
              for name, url in node_urls(net).items()}
    await resolve_many(len(prefixes), 60)  # 60 x 5 more distinct identifiers per node
    for name, url in node_urls(net).items():
        fams = await scrape(net, url)
        assert sum(len(f) for f in fams.values()) == before[name], name  # no new series
        for samples in fams.values():
            for s in samples:
                for label in s.labels.values():
                    assert "/" not in label and label not in prefixes, (s.name, s.labels)


async def test_cache_and_upstream_counters_follow_hits_and_misses(net: Net) -> None:
    handle, missing = f"{ENT}/{demo.suffix(2)}", f"{ENT}/NOT-THERE"
    node = net.topo.node_for_prefix(ENT).address.rpc_addr  # upstream peers are addresses
    m0 = await scrape(net, net.url)
    for _ in range(2):
        assert (await net.get(f"{net.url}/api/handles/{handle}"))[0] == 200
        assert (await net.get(f"{net.url}/api/handles/{missing}"))[0] == 404
    m1 = await scrape(net, net.url)

    def moved(sample: str, **labels) -> float:
        return value(m1, sample, **labels) - value(m0, sample, **labels)

    assert moved("idsim_cache_requests_total", cache="answer") == 4
    assert moved("idsim_cache_hits_total", cache="answer") == 1      # the second resolve
    assert moved("idsim_cache_hits_total", cache="negative") == 1    # the second miss
    assert moved("idsim_cache_entries", cache="answer") == 1
    assert moved("idsim_cache_entries", cache="negative") == 1
    assert moved("idsim_requests_total", op="resolve") == 4
    assert moved("idsim_responses_total", op="resolve", code="1") == 2
    assert moved("idsim_responses_total", op="resolve", code="100") == 2
    assert moved("idsim_request_duration_seconds_count", op="resolve") == 4
    # two upstream resolves (a hit and a negative answer are both answered locally later)
    assert moved("idsim_upstream_request_duration_seconds_count", peer=node,
                 method="resolve") == 2
    assert moved("idsim_upstream_failures_total", peer=node) == 0


async def test_a_secondarys_rendered_answers_are_counted(net: Net) -> None:
    """The secondary node's rendered-answer cache (resolver.answer_cache) shows in the same
    families as the recursive node's caches, as cache="rendered"."""
    url, handle = net.node_url(ENT), f"{ENT}/{demo.suffix(3)}"
    m0 = await scrape(net, url)
    for _ in range(3):
        assert (await net.get(f"{url}/api/handles/{handle}"))[0] == 200
    m1 = await scrape(net, url)
    moved = {n: value(m1, n, cache="rendered") - value(m0, n, cache="rendered")
             for n in ("idsim_cache_requests_total", "idsim_cache_hits_total")}
    assert moved == {"idsim_cache_requests_total": 3, "idsim_cache_hits_total": 2}
    assert value(m1, "idsim_cache_entries", cache="rendered") >= 1


async def test_errors_count_under_their_response_code(net: Net) -> None:
    url = net.node_url(ENT)
    m0 = await scrape(net, url)
    async with net.http.put(f"{url}/api/handles/{ENT}/X", json={"values": []}) as resp:
        assert resp.status == 401  # no credentials
    async with net.http.get(f"{url}/api/nowhere") as resp:
        assert resp.status == 404
    async with net.http.put(f"{net.url}/api/handles/{ENT}/Y", json={"values": []}) as resp:
        assert resp.status == 401  # passed on by the recursive node, refused there
    m1 = await scrape(net, url)
    r1 = await scrape(net, net.url)
    assert value(m1, "idsim_responses_total", op="register", code=str(
        errors.AUTHENTICATION_NEEDED)) - value(m0, "idsim_responses_total", op="register",
                                               code=str(errors.AUTHENTICATION_NEEDED)) == 2
    assert value(m1, "idsim_responses_total", op="other", code=str(errors.PROTOCOL_ERROR)) >= 1
    assert value(r1, "idsim_responses_total", op="register",
                 code=str(errors.AUTHENTICATION_NEEDED)) == 1
    node = net.topo.node_for_prefix(ENT).address.rpc_addr
    assert value(r1, "idsim_upstream_request_duration_seconds_count", peer=node,
                 method="http_put") == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


async def test_an_unreachable_peer_counts_as_an_upstream_failure() -> None:
    node = RecursiveNode("recursive", f"127.0.0.1:{closed_port()}", Config())
    api = NodeAPI(node)
    try:
        try:
            await node.resolve(node.parse(f"{ENT}/A"))
        except errors.PeerUnavailable:
            pass
        fams = parse(api.metrics.exposition().decode())
        assert value(fams, "idsim_upstream_failures_total", peer="top", method="delegate") == 1
    finally:
        await node.close()


def test_metrics_off_means_no_route_and_no_counting() -> None:
    config = Config().with_values("test", {"metrics": {"enabled": 0}})
    api = NodeAPI(SecondaryNode("88.118", open_store("memory:"), ["88.118"], config))
    assert api.metrics is None and "/metrics" not in api.exact


async def test_processes_sharing_a_port_answer_each_others_series(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    config = Config().metrics
    nodes = [RecursiveNode("recursive", "127.0.0.1:1", Config()) for _ in range(2)]
    ms = [NodeMetrics(n) for n in nodes]
    shares = [metrics_share.Sharing(m, tmp_path, config, clock) for m in ms]
    try:
        assert [s.claim() for s in shares] == [0, 1]
        ms[1].requests.ops["resolve"].observe(1, 0.001)
        shares[1].write()
        fams = parse(ms[0].exposition().decode())
        assert value(fams, "idsim_requests_total", op="resolve", process="1") == 1
        assert value(fams, "idsim_requests_total", op="resolve", process="0") == 0
        clock.advance(metrics_share.STALE_AFTER * config.share_every + 1)  # process 1 is gone
        fams = parse(ms[0].exposition().decode())
        assert value(fams, "idsim_requests_total", process="1") == 0
        shares[1].close()  # its index is free again, for the process that replaces it
        again = metrics_share.Sharing(NodeMetrics(nodes[1]), tmp_path, config, clock)
        assert again.claim() == 1
        again.close()
    finally:
        shares[0].close()
        await asyncio.gather(*(n.close() for n in nodes))


def test_scrape_config_covers_every_node() -> None:
    topo = get_preset("guangzhou-2021")
    text = scrape_config(topo, interval=5)
    urls = [topo.recursive.http_url, topo.top.http_url,
            *(s.address.http_url for s in topo.secondaries)]
    assert all(f'"{u.removeprefix("http://")}"' in text for u in urls)
    assert text.count('"127.0.0.1:') == len(urls) == 35
    assert "scrape_interval: 5000ms" in text


def test_idsim_up_writes_the_scrape_config_on_each_start(tmp_path: Path) -> None:
    old = tmp_path / "prometheus.yml"
    old.write_text("# from a start on other ports\n")
    topo = free_topology("mini")
    Cluster(topology=topo, data_dir=tmp_path).prepare()
    text = old.read_text()
    assert text == scrape_config(topo, interval=Config().metrics.scrape_interval)
    assert f'"127.0.0.1:{topo.recursive.http_port}"' in text


async def test_every_scrape_of_a_shared_port_has_every_process(tmp_path: Path) -> None:
    topo, clock = free_topology("mini"), FakeClock()
    hosts = [await start_nodes(topo, ["recursive"], Config(), data_dir=tmp_path,
                               logins=make_logins(topo), store="memory", clock=clock,
                               reuse_port=True) for _ in range(2)]
    try:
        for _ in range(8):  # a new connection each time: either process may answer
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    force_close=True)) as http:
                async with http.get(f"{topo.recursive.http_url}/metrics") as resp:
                    fams = parse(await resp.text())
            assert {s.labels["process"] for s in fams["idsim_requests"]} == {"0", "1"}
    finally:
        for host in hosts:
            await host.close()


async def test_a_msgpack_error_counts_under_its_code_too(net: Net) -> None:
    url = net.node_url(ENT)
    async with net.http.get(f"{url}/api/handles/{ENT}/NOT-THERE",
                            headers={"Accept": "application/msgpack"}) as resp:
        assert resp.status == 404
    fams = await scrape(net, url)
    assert value(fams, "idsim_responses_total", op="resolve", code="100") == 1


def test_the_answer_cache_counts_its_negative_entries_apart() -> None:
    from resolver.cache import TTLCache
    c = TTLCache(max_entries=2, stale_window=5)
    c.put_negative(b"a", ttl=10, now=0)
    c.put_negative(b"b", ttl=10, now=0)
    assert c.negatives == 2
    assert c.get(b"a", 1).negative and c.negative_hits == 1
    assert c.get(b"a", 12).stale and c.negative_stale_hits == 1
    c.put(b"b", "value", ttl=10, now=1)  # a negative entry replaced by an answer
    assert c.negatives == 1
    c.put(b"c", "value", ttl=10, now=1)  # pushes out the least recently used: a
    assert (c.negatives, c.negative_evictions, c.evictions) == (0, 1, 1)
    c.put_negative(b"d", ttl=1, now=1)
    assert c.negatives == 1
    assert c.get(b"d", 100) is None and c.negatives == 0  # expired and dropped on sight
    c.put_negative(b"e", ttl=10, now=100)
    c.invalidate(b"e")
    assert c.negatives == 0
    c.put_negative(b"f", ttl=10, now=100)
    c.clear()
    assert c.negatives == 0 and c.negative_hits == 1  # counters stay
