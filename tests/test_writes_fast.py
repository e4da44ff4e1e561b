"""Batch registration as msgpack, and batches from several processes on one LMDB store.

A msgpack batch (``Content-Type: application/msgpack``) is the JSON batch's document in
another encoding: it stores the same bytes and is checked item by item the same way (a bad
item fails alone, in Handle's shape); ``Accept: application/msgpack`` answers in msgpack.
The batch limit holds for both. Processes serving one LMDB directory each group-commit their
own batches; every identifier of every batch lands, and the per-prefix counts add up.
"""
from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import msgpack
import pytest
from aiohttp.test_utils import TestClient

from conftest import ENT8, ENT8_SECRET, NODE_ADMIN_SECRET, ent8_headers, serve
from resolver import auth, errors, identifiers, record_input, records
from resolver.config import Config
from resolver.nodes import SecondaryNode
from resolver.store import open_store
from resolver.store.lmdb import LmdbStore

NOW = 1_795_402_493
MSGPACK = "application/msgpack"
ADMIN = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118")
I8 = auth.parse_identity(ENT8)
URL = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://ex.com/1"}}


async def make_node(config: Config | None = None, store=None) -> SecondaryNode:
    node = SecondaryNode("gz", store or open_store("memory:"), ["88.118"], config,
                         clock=lambda: NOW)
    await node.bootstrap(NODE_ADMIN_SECRET)
    await node.create_prefix("88.118.8", identity=ADMIN, secret=ENT8_SECRET)
    return node




async def post_msgpack(cli: TestClient, doc, *, accept: str = MSGPACK):
    headers = ent8_headers(**{"Content-Type": MSGPACK, "Accept": accept})
    return await cli.post("/api/batch/register", data=msgpack.packb(doc), headers=headers)


def good_items(n: int, tag: str = "A", *, secret: bool = False) -> list[dict]:
    """``n`` new identifiers; with ``secret`` each has an HS_SECKEY (hashed when stored:
    scrypt, ~50 ms each)."""
    return [{"handle": f"88.118.8/{tag}{i}", "values": [
        {**URL, "data": {"format": "string", "value": f"https://ex.com/{tag}{i}"}},
        {"index": 2, "type": "EMAIL", "data": "ops@ex.com", "ttl": 60},
        {"index": 7, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "0.NA/88.118.8", "index": "300"}}},
        *([{"index": 300, "type": "HS_SECKEY", "data": "not-in-clear"}] if secret else [])]}
        for i in range(n)]


async def test_a_msgpack_batch_stores_what_the_json_batch_stores():
    items = good_items(4) + good_items(1, "K", secret=True) + [
        {"handle": "88.118.8/PLAIN", "values": [URL]}]
    by_json, by_msgpack = await make_node(), await make_node()
    cj, cm = await serve(by_json), await serve(by_msgpack)
    try:
        rj = await cj.post("/api/batch/register", json={"handles": items}, headers=ent8_headers())
        rm = await post_msgpack(cm, {"handles": items})
        assert (rj.status, rm.status) == (200, 200)
        assert rm.content_type == MSGPACK
        doc_json, doc_msgpack = await rj.json(), msgpack.unpackb(await rm.read())
        assert doc_msgpack["results"] == doc_json["results"]
        assert (doc_msgpack["registered"], doc_msgpack["failed"]) == (6, 0)
        for item in items:
            key = identifiers.make_key(item["handle"])
            stored = by_msgpack.store.get(key)
            # secrets are hashed with a fresh salt each time: compare all but that value
            assert _without_secret(stored) == _without_secret(by_json.store.get(key))
        text, rows = records.decode_rows(by_msgpack.store.get(b"88.118.8/K0"))
        assert text == "88.118.8/K0" and [r[0] for r in rows] == [1, 2, 7, 300]
        assert auth.is_hashed(rows[3][3]) and rows[3][6] == records.SECRET_PERMS
        # PLAIN got the writer's HS_ADMIN at index 100, as a single PUT gives it
        assert records.decode_rows(by_msgpack.store.get(b"88.118.8/PLAIN"))[1][1][:4] == [
            100, "HS_ADMIN", "admin", {"handle": I8.handle, "index": 300,
                                       "permissions": "111111111111"}]
        # and the answer is JSON when msgpack is not accepted
        rj2 = await post_msgpack(cm, {"handles": good_items(1, "B")}, accept="application/json")
        assert rj2.content_type == "application/json" and (await rj2.json())["registered"] == 1
    finally:
        await cj.close()
        await cm.close()
        await by_json.close()
        await by_msgpack.close()


def _without_secret(data: bytes):
    text, rows = records.decode_rows(data)
    return text, [r if r[1] != "HS_SECKEY" else r[:3] + r[4:] for r in rows]


async def test_bad_items_of_a_msgpack_batch_fail_alone_in_handles_shape():
    node = await make_node()
    cli = await serve(node)
    items = [
        {"handle": "88.118.8/OK1", "values": [URL]},
        {"handle": "88.118.8/BIN", "values": [{**URL, "data": {"format": "string",
                                                               "value": b"\x00bytes"}}]},
        {"handle": "88.118.8/SITE", "values": [{"index": 3, "type": "HS_SITE", "data": {
            "format": "site", "value": {"servers": [b"raw"]}}}]},
        {"handle": b"88.118.8/BYTES", "values": [URL]},
        {"handle": 42, "values": [URL]},
        {"handle": "88.118.8/BIGINT", "values": [{**URL, "index": 2**63}]},
        {"handle": "88.118.8/FLOAT", "values": [{**URL, "ttl": 1.5}]},
        {"handle": "88.118.8/BOOL", "values": [{**URL, "index": True}]},
        {"handle": "88.118.8/NOLIST", "values": {"index": 1}},
        {"handle": "88.118.8/EMPTY", "values": []},
        {"handle": "88.118.8/CTRL", "values": [{**URL, "type": "URL\x07"}]},
        {"handle": "88.118.8/FAT", "values": [{**URL, "data": "x" * 70_000}]},
        {"handle": "88.118.8/OK1", "values": [URL]},  # twice in one batch
        {"handle": "0.NA/88.118.77", "values": [URL]},  # a prefix: the admin API's
        {"handle": "88.119/ELSEWHERE", "values": [URL]},
        {"handle": "88.118.8/OK2", "values": [URL]},
    ]
    try:
        r = await post_msgpack(cli, {"handles": items})
        assert r.status == 200
        doc = msgpack.unpackb(await r.read())
        codes = [x["responseCode"] for x in doc["results"]]
        assert codes == [1, 202, 202, 102, 102, 202, 202, 202, 202, 202, 202, 202, 101, 202,
                         301, 1]
        assert (doc["registered"], doc["failed"]) == (2, 14)
        for result in doc["results"]:
            assert set(result) >= {"responseCode", "handle"}
            assert result["responseCode"] == 1 or result["message"]
        assert doc["results"][11]["message"].startswith("values[0].data is 70000 bytes")
        stored = [k for k, _ in node.store.scan(b"88.118.8/")]
        assert stored == [b"88.118.8/OK1", b"88.118.8/OK2"]
        # not a document at all: one Handle-shaped 400 for the request
        r = await cli.post("/api/batch/register", data=b"\xc1\xc1",
                           headers=ent8_headers(**{"Content-Type": MSGPACK, "Accept": MSGPACK}))
        doc = msgpack.unpackb(await r.read())
        assert (r.status, doc["responseCode"]) == (400, errors.PROTOCOL_ERROR)
        r = await post_msgpack(cli, [1, 2, 3])
        assert (r.status, msgpack.unpackb(await r.read())["responseCode"]) == (400, 202)
        r = await post_msgpack(cli, {"handles": [["88.118.8/X", [URL]]]})
        assert (r.status, msgpack.unpackb(await r.read())["responseCode"]) == (400, 202)
    finally:
        await cli.close()
        await node.close()


async def test_a_batch_at_the_limit_works_and_one_past_it_is_refused():
    node = await make_node(Config().with_values("test", {"batch": {"max_register": 50}}))
    cli = await serve(node)
    try:
        r = await post_msgpack(cli, {"handles": good_items(50, "L")})
        doc = msgpack.unpackb(await r.read())
        assert (r.status, doc["registered"]) == (200, 50)
        r = await post_msgpack(cli, {"handles": good_items(51, "M")})
        doc = msgpack.unpackb(await r.read())
        assert (r.status, doc["responseCode"]) == (413, 202)
        assert "at most 50 identifiers; got 51" in doc["message"]
        r = await cli.post("/api/batch/register", json={"handles": good_items(51, "M")},
                           headers=ent8_headers())
        assert r.status == 413
        assert node.store.get(b"88.118.8/M0") is None
    finally:
        await cli.close()
        await node.close()


async def test_a_msgpack_body_over_the_size_limit_is_413():
    config = Config().with_values("test", {"http": {"max_body": 4096}})
    node = await make_node(config)
    cli = await serve(node)
    try:
        r = await post_msgpack(cli, {"handles": good_items(40, "S")})
        doc = msgpack.unpackb(await r.read())
        assert (r.status, doc["responseCode"]) == (413, errors.PROTOCOL_ERROR)
        assert node.store.get(b"88.118.8/S0") is None
    finally:
        await cli.close()
        await node.close()


# ------------------------------------------------------------------ several processes

def register_in_process(path: str, tag: str, batches: int, size: int, barrier) -> list[int]:
    """One process serving the store at ``path``: ``batches`` batches of ``size`` new
    identifiers, each a durable commit; the response codes."""
    async def run() -> list[int]:
        node = SecondaryNode("gz", LmdbStore(path, map_size_gib=0.25), ["88.118"])
        codes: list[int] = []
        try:
            barrier.wait(timeout=60)  # both processes hold the store open before writing
            for b in range(batches):
                items = [(f"88.118.8/{tag}-{b}-{i}", [URL]) for i in range(size)]
                done = await node.register_many(items, identity=I8)
                codes += [r["responseCode"] for r in done]
        finally:
            await node.close()
        return codes
    return asyncio.run(run())


async def test_concurrent_batches_from_two_processes_on_one_lmdb_all_land(tmp_path):
    path = str(tmp_path / "gz")
    first = await make_node(store=LmdbStore(path, map_size_gib=0.25))
    await first.close()  # bootstrapped; now two other processes serve the same directory
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(2, mp_context=ctx) as pool:
        barrier = manager.Barrier(2)
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(pool, register_in_process, path, tag, 8, 250, barrier)
                   for tag in ("P", "Q")]
        results = await asyncio.wait_for(asyncio.gather(*futures), timeout=120)
    assert [set(codes) for codes in results] == [{1}, {1}]
    assert [len(codes) for codes in results] == [2000, 2000]
    store = LmdbStore(path, map_size_gib=0.25)
    try:
        assert store.count(b"88.118.8") == 4000  # the group count of every commit added up
        for tag in ("P", "Q"):
            for b in range(8):
                for i in (0, 249):
                    text, rows = records.decode_rows(store.get(f"88.118.8/{tag}-{b}-{i}"
                                                               .upper().encode()))
                    assert text == f"88.118.8/{tag}-{b}-{i}" and rows[0][3] == URL["data"]["value"]
    finally:
        await store.close()


def test_rows_from_json_gives_the_rows_values_from_json_stores():
    doc = good_items(1)[0]["values"] + [{"index": 9, "type": "HS_VLIST", "data": {
        "format": "vlist", "value": [{"handle": "0.NA/88.118.8", "index": "300"}]}}]
    rows = record_input.rows_from_json(doc, now=NOW)
    assert rows == [v.to_row() for v in record_input.values_from_json(doc, now=NOW)]
    assert records.encode_rows("88.118.8/X", list(reversed(rows))) == records.encode(
        "88.118.8/X", record_input.values_from_json(doc, now=NOW))
    with pytest.raises(errors.HandleError) as info:
        record_input.rows_from_json([URL, {**URL, "type": "URL\u2028"}], now=NOW)
    assert "values[1].type must not contain control characters" in info.value.message


def test_the_benchmarks_spliced_msgpack_batch_is_the_document_it_claims():
    """benchmarks/batch_register.py splices its msgpack batches: the bytes must be exactly
    msgpack's encoding of the batch document, or its figure would measure something else."""
    from benchmarks.batch_register import VALUES, msgpack_batch
    handles = [f"88.118.8/B-{i}" for i in range(300)]
    assert msgpack_batch(handles) == msgpack.packb(
        {"handles": [{"handle": h, "values": VALUES} for h in handles]})


async def test_a_create_that_another_process_beat_is_refused_not_overwritten():
    """Two processes of one node may both read "absent" and both create: the store checks
    again inside its commit, so the second create is 'already exists' (PUT and batch) and
    the first one's record stays."""
    node = await make_node()
    theirs = records.encode("88.118.8/RACE", [records.Value(1, "URL", "https://theirs")])
    handle, real_read = node.parse("88.118.8/RACE"), node.read

    def read_before_their_commit(key):  # this process read the key before theirs landed
        return (None, None) if key == handle.key else real_read(key)
    node.read = read_before_their_commit
    await node.store.put_many([(handle.key, theirs)])  # the other process's create
    owner = I8  # the enterprise 88.118.8's own login
    with pytest.raises(errors.HandleError) as err:
        await node.put(handle, [records.Value(1, "URL", "https://mine")], identity=owner,
                       overwrite=False)
    assert err.value.code == errors.HANDLE_ALREADY_EXISTS
    results = await node.register_many(
        [("88.118.8/RACE", {"values": [{"index": 1, "type": "URL", "data": "https://mine"}]}),
         ("88.118.8/FREE", {"values": [{"index": 1, "type": "URL", "data": "https://free"}]})],
        identity=owner)
    assert [r["responseCode"] for r in results] == [errors.HANDLE_ALREADY_EXISTS, 1]
    assert node.store.get(handle.key) == theirs
    assert node.store.get(node.key("88.118.8/FREE")) is not None
