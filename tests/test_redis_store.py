"""The Redis Cluster store beyond the shared contract (tests/test_store.py runs that on it):
its URL, namespaces, replica acknowledgement, durability across a SIGKILL of every server,
and a secondary node serving from it without blocking its event loop on reads."""
from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis

from benchmarks import procs
from resolver import auth
from resolver.nodes import SecondaryNode
from resolver.store import open_store
from resolver.store.base import store_kind
from resolver.store.redis_cluster import NotReplicated, RedisClusterStore, for_node, parse_url

ROOT = Path(__file__).resolve().parent.parent


def fresh_url(cluster, query: str = "") -> str:
    return f"{cluster.url}/t{uuid.uuid4().hex[:12]}{query}"


def test_parse_url():
    assert parse_url("redis-cluster://127.0.0.1:7000,10.0.0.2:7001") == (
        [("127.0.0.1", 7000), ("10.0.0.2", 7001)], "idsim", 0, 1000)
    assert parse_url("redis-cluster://h:1/node-88.118?replicas=2&wait_ms=50") == (
        [("h", 1)], "node-88.118", 2, 50)


@pytest.mark.parametrize("url", ["redis-cluster://", "redis-cluster://host",
                                 "redis-cluster://h:p", "redis-cluster://h:1/a{b}",
                                 "redis-cluster://h:1?replicas=-1"])
def test_bad_urls_are_refused_before_connecting(url):
    with pytest.raises(ValueError):
        open_store(url)


async def test_namespaces_keep_stores_apart(redis_cluster):
    a, b = open_store(fresh_url(redis_cluster)), open_store(fresh_url(redis_cluster))
    try:
        await a.put_many([(b"0.NA/88.118.8", b"a"), (b"88.118.8/X", b"a")])
        await b.put_many([(b"0.NA/88.118.8", b"b")])
        assert a.get(b"0.NA/88.118.8") == b"a" and b.get(b"0.NA/88.118.8") == b"b"
        assert dict(a.groups()) == {b"0.NA": 1, b"88.118.8": 1}
        assert dict(b.groups()) == {b"0.NA": 1}
        assert b.get(b"88.118.8/X") is None
    finally:
        await a.close()
        await b.close()


async def test_get_async_reads_what_get_reads(redis_cluster):
    s = open_store(fresh_url(redis_cluster))
    try:
        await s.put_many([(b"88.118.8/A", b"a")])
        assert await s.get_async(b"88.118.8/A") == s.get(b"88.118.8/A") == b"a"
        assert await s.get_async(b"88.118.8/B") is None
        # many reads in one turn of the loop (they share a pipeline): each gets its own answer
        keys = [b"88.118.%d/K%d" % (g, i) for g in range(9) for i in range(20)]
        await s.put_many([(k, b"v" + k) for k in keys[::2]])
        got = await asyncio.gather(*(s.get_async(k) for k in keys))
        assert got == [b"v" + k if n % 2 == 0 else None for n, k in enumerate(keys)]
    finally:
        await s.close()


async def test_a_write_no_replica_acknowledged_fails(redis_cluster):
    # the local cluster has no replicas: WAIT 1 times out with 0 and the write is refused
    s = open_store(fresh_url(redis_cluster, "?replicas=1&wait_ms=50"))
    try:
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            await s.put_many([(b"88.118.8/A", b"a")])
        with pytest.raises(NotReplicated):
            await s.delete(b"88.118.8/A")
    finally:
        await s.close()


async def test_acknowledged_writes_survive_sigkill_of_every_server(redis_cluster):
    for port in redis_cluster.ports:  # what "acknowledged" rests on (README)
        r = redis.Redis(port=port)
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("appendfsync") == {"appendfsync": "always"}
        r.close()
    url = fresh_url(redis_cluster)
    s = open_store(url)
    groups = [b"88.118.%d" % g for g in range(12)]  # spread over the three masters' slots
    try:
        acked = await asyncio.gather(*(
            s.put_many([(g + b"/%03d" % i, b"v%d" % i) for g in groups]) for i in range(100)))
        deleted = await asyncio.gather(*(s.delete(g + b"/000") for g in groups))
        assert len(acked) == 100 and all(deleted)
    finally:
        await s.close()
    masters = {redis.Redis(port=p).cluster("myid") for p in redis_cluster.ports}
    assert len(masters) == 3

    redis_cluster.kill()
    redis_cluster.start()

    s = open_store(url)
    try:
        for g in groups:
            assert s.get(g + b"/000") is None
            assert all(s.get(g + b"/%03d" % i) == b"v%d" % i for i in range(1, 100))
            assert s.count(g) == 99
            assert [k for k, _ in s.scan(g + b"/", limit=1000)] == [g + b"/%03d" % i
                                                                   for i in range(1, 100)]
        assert dict(s.groups()) == {g: 99 for g in groups}
    finally:
        await s.close()


async def test_a_secondary_node_serves_from_redis_without_blocking_reads(redis_cluster):
    store = open_store(fresh_url(redis_cluster))
    node = SecondaryNode("gz", store, ["88.118"])
    try:
        await node.bootstrap("admin-secret")
        admin = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118")
        await node.create_prefix("88.118.8", identity=admin, secret="s8")
        owner = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118.8")
        docs = [{"index": 1, "type": "URL", "data": {"format": "string", "value": "u"}}]
        results = await node.register_many([(f"88.118.8/SN{i}", docs) for i in range(5)],
                                           identity=owner)
        assert all(r["responseCode"] == 1 for r in results)
        assert node.list_handles("88.118.8", 0, 10) == (5, [f"88.118.8/SN{i}" for i in range(5)])
        assert node.report_stats()["identifiers"] == 5
        assert node.report_stats()["enterprises"] == 1

        def blocked(key):
            raise AssertionError("resolve blocked the event loop on a network read")
        store.get = blocked  # resolving must await get_async, never the blocking read
        answer = await node.resolve(node.parse("88.118.8/SN3"))
        assert answer.rows[0][1] == "URL"
        method = node.rpc_handlers()["resolve"].fn
        assert inspect.iscoroutinefunction(method)
        assert await method(None, "88.118.8/SN3") == answer.data
        assert node.stats["resolutions"] == 2
    finally:
        await node.close()


def test_is_the_store_open_store_builds(redis_cluster):
    s = open_store(fresh_url(redis_cluster))
    try:
        assert isinstance(s, RedisClusterStore)
    finally:
        asyncio.run(s.close())


def test_store_option_and_node_namespaces():
    assert store_kind("lmdb") == "lmdb" and store_kind("memory") == "memory"
    with pytest.raises(ValueError):
        store_kind("redis://h:1")
    assert for_node("redis-cluster://h:1,h:2", "88.118") == "redis-cluster://h:1,h:2/idsim.88.118"
    assert (for_node("redis-cluster://h:1/run7?replicas=1", "top")
            == "redis-cluster://h:1/run7.top?replicas=1")


def test_idsim_node_serves_from_redis_cluster(redis_cluster, tmp_path):
    base = fresh_url(redis_cluster)
    port = procs.free_port()
    node = procs.spawn([sys.executable, "-m", "topology.cli", "node", "--code", "88.118",
                        "--enterprise", "88.118.8", "--demo", "20", "--port", str(port),
                        "--data", str(tmp_path), "--store", base],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        procs.wait_port(port, timeout=60, proc=node)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/handles/88.118.8/SN000000007",
                                    timeout=10) as resp:
            assert json.load(resp)["responseCode"] == 1
    finally:
        procs.stop(node)

    async def check():  # the records are in the cluster, under the node's namespace
        s = open_store(for_node(base, "88.118"))
        try:
            assert s.count(b"88.118.8") == 20
        finally:
            await s.close()
    asyncio.run(check())
