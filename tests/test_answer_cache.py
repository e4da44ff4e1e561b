"""A secondary node's rendered answers (``resolver.answer_cache``): hot answers served without
decoding, yet never older than the last write to that handle in any process, never a hidden
value, and bounded in entries and bytes.

"Another process" is a second ``SecondaryNode`` on the same LMDB environment (LMDB lets a
process open an environment once, so the two share it as two processes share the files), and
once a real subprocess writing to the same directory.
"""
from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import msgpack
import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from resolver import auth, errors, records
from resolver.answer_cache import ENTRY_OVERHEAD, AnswerCache
from resolver.auth import Identity
from resolver.config import AnswersConfig, Config
from resolver.identifiers import make_key, parse
from resolver.nodes import SecondaryNode
from resolver.population import Member, Population
from resolver.store import open_store
from resolver.templates import CATALOGUE
from resolver.web import NodeAPI

REPO = Path(__file__).resolve().parent.parent
NODE = Identity(auth.SECRET_INDEX, "0.NA/88.118")
ENT8 = Identity(auth.SECRET_INDEX, "0.NA/88.118.8")
H = "88.118.8/SN-1"


def url(value: str) -> list[records.Value]:
    return [records.Value(1, "URL", value)]


async def node_pair(tmp_path, **kw) -> tuple[SecondaryNode, SecondaryNode]:
    """Two nodes serving one LMDB store (as two processes serving one node's port do)."""
    store = open_store(f"lmdb:{tmp_path / 'db'}?map_size=0.1")
    a = SecondaryNode("gz", store, ["88.118"], **kw)
    b = SecondaryNode("gz", store, ["88.118"], **kw)
    await a.bootstrap("node-secret")
    await a.create_prefix("88.118.8", identity=NODE, secret="ent8-secret")
    return a, b


async def http(node) -> TestClient:
    client = TestClient(RawTestServer(NodeAPI(node), host="127.0.0.1"))
    await client.start_server()
    return client


async def get_values(client: TestClient, text: str = H, **kw) -> tuple[int, list]:
    resp = await client.get(f"/api/handles/{text}", **kw)
    doc = await resp.json()
    return resp.status, doc.get("values", [])


async def test_a_warm_get_is_served_rendered_and_sees_a_write_at_once(tmp_path):
    a, _ = await node_pair(tmp_path)
    await a.put(parse(H), url("https://one.example"), identity=ENT8)
    client = await http(a)
    try:
        status, first = await get_values(client)
        hits = a.answers.hits
        assert (status, first[0]["data"]["value"]) == (200, "https://one.example")
        assert (await get_values(client))[1] == first
        assert a.answers.hits == hits + 1  # served from the rendered bytes
        resp = await client.put(f"/api/handles/{H}", json={"values": [
            {"index": 1, "type": "URL", "data": "https://two.example"}]},
            headers={"Authorization": auth.basic_header("300:0.NA/88.118.8", "ent8-secret")})
        assert resp.status == 200
        assert (await get_values(client))[1][0]["data"]["value"] == "https://two.example"
    finally:
        await client.close()
        await a.close()


async def test_a_write_by_another_process_is_seen_at_once_by_get_and_rpc(tmp_path):
    a, b = await node_pair(tmp_path)
    await a.put(parse(H), url("https://one.example"), identity=ENT8)
    client = await http(a)
    try:
        await get_values(client)
        assert a.cached(H) is not None and a.public_record(H) == a.public_record(H)
        await b.put(parse(H), url("https://two.example"), identity=ENT8)
        assert (await get_values(client))[1][0]["data"]["value"] == "https://two.example"
        assert msgpack.unpackb(a.public_record(H))[1][0][3] == "https://two.example"
        await b.delete(parse(H), identity=ENT8)
        assert (await get_values(client))[0] == 404
        with pytest.raises(errors.HandleError) as info:
            a.public_record(H)
        assert info.value.code == errors.HANDLE_NOT_FOUND
        assert a.cached(H) is None
    finally:
        await client.close()
        await a.close()


WRITER = """
import asyncio, sys
from resolver import auth, records
from resolver.identifiers import parse
from resolver.nodes import SecondaryNode
from resolver.store import open_store
async def main():
    node = SecondaryNode("gz", open_store(sys.argv[1]), ["88.118"])
    await node.put(parse(sys.argv[2]), [records.Value(1, "URL", sys.argv[3])],
                   identity=auth.Identity(300, "0.NA/88.118.8"))
    await node.close()
asyncio.run(main())
"""


async def test_a_write_by_a_real_second_process_is_seen_at_once(tmp_path):
    a, _ = await node_pair(tmp_path)
    await a.put(parse(H), url("https://one.example"), identity=ENT8)
    client = await http(a)
    try:
        await get_values(client)
        assert a.cached(H) is not None
        subprocess.run([sys.executable, "-c", WRITER, f"lmdb:{tmp_path / 'db'}?map_size=0.1",
                        H, "https://other-process.example"], cwd=REPO, check=True, timeout=60)
        assert (await get_values(client))[1][0]["data"]["value"] == \
            "https://other-process.example"
    finally:
        await client.close()
        await a.close()


async def test_population_records_are_cached_until_a_write_or_tombstone_covers_them(tmp_path):
    pop = Population([Member("88.118.8", 1000, CATALOGUE["automotive"])], 2021)
    a, b = await node_pair(tmp_path, population=pop)
    text = f"88.118.8/{pop.of(b'88.118.8').suffix(42)}"
    client = await http(a)
    try:
        status, synthetic = await get_values(client, text)
        assert status == 200 and a.cached(text) is not None
        assert a.public_record(text) == pop.of(b"88.118.8").record(42)
        await b.put(parse(text), url("https://stored.example"), identity=ENT8)
        assert (await get_values(client, text))[1][0]["data"]["value"] == "https://stored.example"
        await b.delete(parse(text), identity=ENT8)  # a tombstone over the population record
        assert (await get_values(client, text))[0] == 404
        with pytest.raises(errors.HandleError):
            a.public_record(text)
        await b.put(parse(text), url("https://again.example"), identity=ENT8)
        assert (await get_values(client, text))[1][0]["data"]["value"] == "https://again.example"
    finally:
        await client.close()
        await a.close()


async def test_hidden_values_are_never_served_from_the_cache(tmp_path):
    a, _ = await node_pair(tmp_path)
    values = [records.Value(1, "URL", "https://public.example"),
              records.Value(2, "NOTE", "private", perms=records.SECRET_PERMS),
              records.Value(300, "HS_SECKEY", "s3cret", perms=records.SECRET_PERMS)]
    await a.put(parse(H), values, identity=ENT8)
    client = await http(a)
    owner = {"Authorization": auth.basic_header("300:0.NA/88.118.8", "ent8-secret")}
    try:
        # an authorised read first: it must not leave its answer for anonymous readers
        _, seen = await get_values(client, headers=owner)
        assert {v["type"] for v in seen} >= {"URL", "NOTE"}
        for _ in range(2):  # the miss that fills the cache, then the hit
            _, anonymous = await get_values(client)
            assert {v["type"] for v in anonymous} == {"URL", "HS_ADMIN"}
        assert b"NOTE" not in a.cached(H).public_json and b"SECKEY" not in a.cached(H).public_json
        for _ in range(2):  # the miss, then the hit
            rows = msgpack.unpackb(a.public_record(H))[1]
            assert [r[1] for r in rows] == ["URL", "HS_ADMIN"]  # no hidden value or secret
        # an authorised read after the cache is warm still gets everything
        _, seen = await get_values(client, headers=owner)
        assert "NOTE" in {v["type"] for v in seen}
    finally:
        await client.close()
        await a.close()


def test_the_cache_is_bounded_in_entries_and_bytes_and_drops_the_least_recent():
    store: dict[bytes, bytes] = {}
    cache = AnswerCache(AnswersConfig(entries=3, max_bytes=10**6), store.get)
    for i in range(10):
        key = f"K{i}".encode()
        store[key] = b"v" * 10
        cache.keep_json(key, store[key], b"[]")
        if i == 2:
            assert cache.get(b"K0") is not None  # K0 is now the most recent
    assert len(cache) == 3 and cache.evicted == 7
    assert cache.get(b"K9") is not None and cache.get(b"K1") is None
    small = AnswerCache(AnswersConfig(entries=1000, max_bytes=5 * (ENTRY_OVERHEAD + 112)),
                        store.get)
    for i in range(10):
        key = f"K{i}".encode()
        small.keep_json(key, store[key], b"x" * 100)
        assert small.bytes_used <= small.max_bytes
    assert len(small) == 5
    big = AnswerCache(AnswersConfig(entries=1000, max_bytes=100), store.get)
    big.keep_json(b"K1", store[b"K1"], b"x" * 1000)  # larger than the whole budget
    assert len(big) == 0 and big.bytes_used == 0
    off = AnswerCache(AnswersConfig(entries=0), store.get)
    off.keep_record(b"K1", store[b"K1"], b"r")
    assert len(off) == 0


def test_an_entry_costs_no_more_memory_than_it_counts():
    """``bytes_used`` covers what the entries really hold (tracemalloc), so ``max_bytes``
    bounds the memory."""
    store: dict[bytes, bytes] = {}
    cache = AnswerCache(AnswersConfig(entries=10**6, max_bytes=10**9), store.get)
    n = 700  # just after the dict of entries has grown: the most spare room per entry
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            text = f"88.118.8/SN{i:09d}"
            data = records.encode(text, url(f"https://ex.com/{i}"))
            key = make_key(text)
            cache.keep_json(key, data, records.Answer(data).public_json)
            cache.keep_record(key, data, records.public_record(data))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == n
    assert held <= cache.bytes_used, (held / n, cache.bytes_used / n)


async def test_a_node_with_the_cache_off_serves_the_same_answers(tmp_path):
    cfg = Config().with_values("test", {"answers": {"entries": 0}})
    a, _ = await node_pair(tmp_path, config=cfg)
    await a.put(parse(H), url("https://one.example"), identity=ENT8)
    client = await http(a)
    try:
        assert a.answers is None and a.cached(H) is None
        assert (await get_values(client))[1][0]["data"]["value"] == "https://one.example"
        assert msgpack.unpackb(a.public_record(H))[1][0][3] == "https://one.example"
    finally:
        await client.close()
        await a.close()
