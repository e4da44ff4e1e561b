"""Record stores: one contract for ``memory:``, ``lmdb:PATH`` and ``redis-cluster://`` (a real
local 3-master cluster, ``tests/redis_cluster.py``), plus LMDB's and Redis's durability."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from resolver.config import StoreConfig
from resolver.store import RecordStore, group_of, open_store
from resolver.store.lmdb import LmdbStore
from resolver.store.memory import MemoryStore


def store_url(request, tmp_path) -> str:
    """A fresh, empty store of the kind the test is parametrised with."""
    if request.param == "redis-cluster":  # a namespace of its own: empty
        return f"{request.getfixturevalue('redis_cluster').url}/t{uuid.uuid4().hex[:12]}"
    return "memory:" if request.param == "memory" else f"lmdb:{tmp_path / 'db'}"


@pytest.fixture(params=["memory", "lmdb", "redis-cluster"])
async def store(request, tmp_path):
    s = open_store(store_url(request, tmp_path))
    try:
        yield s
    finally:
        await s.close()


def test_open_store_picks_the_backend(tmp_path):
    assert isinstance(open_store("memory:"), MemoryStore)
    s = open_store(f"lmdb:{tmp_path}?map_size=1&sync=0", StoreConfig(commit_gather=0.25))
    try:
        assert isinstance(s, LmdbStore)
        assert s.url == f"lmdb:{tmp_path}"
        assert s.gather == 0.25  # [store] commit_gather reaches the writer
    finally:
        asyncio.run(s.close())


@pytest.mark.parametrize("url", ["redis://localhost", "", "LMDB:/tmp/x", "file:/tmp/x", "/tmp/x"])
def test_open_store_rejects_unknown_schemes(url):
    with pytest.raises(ValueError, match="unknown store URL"):
        open_store(url)


@pytest.mark.parametrize("url", ["lmdb:", "lmdb:?map_size=1"])
def test_open_store_lmdb_needs_a_path(url):
    with pytest.raises(ValueError, match="path"):
        open_store(url)


def test_group_of():
    assert group_of(b"88.118.8/SN/1") == b"88.118.8"
    assert group_of(b"88.118.8") == b"88.118.8"


# ------------------------------------------------------------------ the contract

async def test_implements_the_protocol(store):
    assert isinstance(store, RecordStore)


async def test_get_missing_is_none(store):
    assert store.get(b"88.118.8/NOPE") is None
    assert store.count() == 0
    assert store.count(b"88.118.8") == 0


async def test_put_many_then_get(store):
    await store.put_many([(b"88.118.8/A", b"a"), (b"88.118.8/B", b"b"), (b"88.118.9/A", b"c")])
    assert store.get(b"88.118.8/A") == b"a"
    assert store.get(b"88.118.8/B") == b"b"
    assert store.get(b"88.118.9/A") == b"c"
    assert store.get(b"88.118.8/C") is None


async def test_put_many_empty_is_a_no_op(store):
    await store.put_many([])
    assert store.count() == 0


async def test_overwrite(store):
    await store.put_many([(b"88.118.8/A", b"old")])
    await store.put_many([(b"88.118.8/A", b"new")])
    assert store.get(b"88.118.8/A") == b"new"
    assert store.count() == 1
    assert store.count(b"88.118.8") == 1


async def test_absent_keys_that_hold_a_record_are_neither_written_nor_hidden(store):
    """Creating a key another process created since it was read (several processes serve
    one node): the store says so and keeps what is there; a tombstone (b"") counts as free."""
    await store.put_many([(b"88.118.8/A", b"theirs"), (b"88.118.8/T", b"")])
    taken = await store.put_many([(b"88.118.8/A", b"mine"), (b"88.118.8/B", b"b"),
                                  (b"88.118.8/T", b"t")],
                                 absent=[b"88.118.8/A", b"88.118.8/B", b"88.118.8/T"])
    assert taken == {b"88.118.8/A"}
    assert store.get(b"88.118.8/A") == b"theirs"
    assert store.get(b"88.118.8/B") == b"b" and store.get(b"88.118.8/T") == b"t"
    assert await store.put_many([(b"88.118.8/C", b"c")]) == set()


async def test_two_creates_of_one_key_at_once_one_is_told_it_is_taken(store):
    """Two processes creating one new handle at the same instant: the store decides inside
    its write (LMDB's transaction, a Redis group's script), so exactly one of them gets it."""
    key = b"88.118.8/RACE"
    first, second = await asyncio.gather(store.put_many([(key, b"one")], absent=[key]),
                                         store.put_many([(key, b"two")], absent=[key]))
    assert sorted([first, second], key=len) == [set(), {key}]
    assert store.get(key) == (b"one" if not first else b"two")


async def test_same_key_twice_in_one_batch(store):
    await store.put_many([(b"88.118.8/A", b"1"), (b"88.118.8/A", b"2")])
    assert store.get(b"88.118.8/A") == b"2"
    assert store.count() == store.count(b"88.118.8") == 1


async def test_delete(store):
    await store.put_many([(b"88.118.8/A", b"a"), (b"88.118.8/B", b"b")])
    assert await store.delete(b"88.118.8/A") is True
    assert store.get(b"88.118.8/A") is None
    assert store.get(b"88.118.8/B") == b"b"
    assert await store.delete(b"88.118.8/A") is False
    assert await store.delete(b"88.118.8/NEVER") is False


async def test_counts_total_and_per_group(store):
    await store.put_many([(b"88.118.8/A", b"1"), (b"88.118.8/B", b"1"), (b"88.118.80/A", b"1"),
                          (b"88.118/X", b"1"), (b"0.NA/88.118.8", b"1")])
    assert store.count() == 5
    assert store.count(b"88.118.8") == 2
    assert store.count(b"88.118.80") == 1
    assert store.count(b"88.118") == 1
    assert store.count(b"0.NA") == 1
    assert store.count(b"88") == 0

    await store.put_many([(b"88.118.8/A", b"2"), (b"88.118.8/C", b"1")])  # one overwrite, one new
    assert store.count() == 6
    assert store.count(b"88.118.8") == 3

    assert await store.delete(b"88.118.8/B")
    assert not await store.delete(b"88.118.8/B")
    assert store.count() == 5
    assert store.count(b"88.118.8") == 2
    assert store.count(b"88.118.80") == 1


async def test_groups(store):
    assert dict(store.groups()) == {}
    await store.put_many([(b"88.118.8/A", b"1"), (b"88.118.8/B", b"1"), (b"88.118.9/A", b"1")])
    assert dict(store.groups()) == {b"88.118.8": 2, b"88.118.9": 1}
    await store.delete(b"88.118.9/A")
    # an emptied group is gone, not listed with 0
    assert dict(store.groups()) == {b"88.118.8": 2}
    assert store.count(b"88.118.9") == 0
    await store.put_many([(b"88.118.9/A", b"1")])
    assert dict(store.groups()) == {b"88.118.8": 2, b"88.118.9": 1}


NEIGHBOURS = [b"88.118.7/Z", b"88.118.80/A", b"88.118.80/B", b"88.118.8", b"88.118.8.1/A",
              b"88.118/8", b"88.118.9/A"]


async def _fill(store) -> list[bytes]:
    mine = [b"88.118.8/%03d" % i for i in range(25)] + [b"88.118.8/", b"88.118.8/\xff", b"88.118.8/A/B"]
    items = [(k, b"v:" + k) for k in mine + NEIGHBOURS]
    await store.put_many(list(reversed(items)))  # insertion order must not matter
    return sorted(mine)


async def test_scan_prefix_in_key_order(store):
    mine = await _fill(store)
    got = store.scan(b"88.118.8/", limit=1000)
    assert [k for k, _ in got] == mine
    assert all(v == b"v:" + k for k, v in got)
    # a neighbouring prefix that merely starts with the same characters is not leaked
    assert [k for k, _ in store.scan(b"88.118.80/")] == [b"88.118.80/A", b"88.118.80/B"]
    assert store.scan(b"88.118.6/") == []


async def test_scan_limit(store):
    mine = await _fill(store)
    assert [k for k, _ in store.scan(b"88.118.8/", limit=5)] == mine[:5]
    assert store.scan(b"88.118.8/", limit=0) == []
    assert len(store.scan(b"88.118.8/")) == len(mine)  # default limit 100 > 28


async def test_scan_paging_with_after(store):
    mine = await _fill(store)
    pages, after = [], None
    while True:
        page = store.scan(b"88.118.8/", after=after, limit=4)
        if not page:
            break
        assert len(page) <= 4
        pages.append([k for k, _ in page])
        after = page[-1][0]
    assert [k for page in pages for k in page] == mine
    assert len(pages) == 7


async def test_scan_after_is_exclusive_and_need_not_exist(store):
    mine = await _fill(store)
    assert [k for k, _ in store.scan(b"88.118.8/", after=mine[3], limit=2)] == mine[4:6]
    # a key between two stored keys
    assert [k for k, _ in store.scan(b"88.118.8/", after=b"88.118.8/0105", limit=1)] == [b"88.118.8/011"]
    # before the prefix: from the start; after all of it: nothing
    assert [k for k, _ in store.scan(b"88.118.8/", after=b"0", limit=3)] == mine[:3]
    assert store.scan(b"88.118.8/", after=b"88.118.8/\xff\xff") == []
    assert store.scan(b"88.118.8/", after=b"zzz") == []


async def test_scan_everything(store):
    mine = await _fill(store)
    assert [k for k, _ in store.scan(b"", limit=1000)] == sorted(mine + NEIGHBOURS)


async def test_500_concurrent_put_many_all_land(store):
    async def put(i: int):
        await store.put_many([(b"88.118.8/%04d" % i, b"%d" % i), (b"88.118.9/%04d" % i, b"x")])

    await asyncio.gather(*(put(i) for i in range(500)))
    assert store.count() == 1000
    assert store.count(b"88.118.8") == 500
    assert store.count(b"88.118.9") == 500
    assert all(store.get(b"88.118.8/%04d" % i) == b"%d" % i for i in range(500))


async def test_concurrent_puts_and_deletes(store):
    await store.put_many([(b"88.118.8/%03d" % i, b"old") for i in range(100)])
    results = await asyncio.gather(
        *(store.delete(b"88.118.8/%03d" % i) for i in range(0, 100, 2)),
        *(store.put_many([(b"88.118.8/%03d" % i, b"new")]) for i in range(1, 100, 2)),
        *(store.delete(b"88.118.8/missing%d" % i) for i in range(10)),
    )
    assert results[:50] == [True] * 50
    assert results[100:] == [False] * 10
    assert store.count() == store.count(b"88.118.8") == 50
    assert all(store.get(b"88.118.8/%03d" % i) == b"new" for i in range(1, 100, 2))


# ------------------------------------------------------------------ LMDB only

@pytest.fixture
async def lmdb_store(tmp_path):
    s = open_store(f"lmdb:{tmp_path}")
    try:
        yield s
    finally:
        await s.close()


async def test_lmdb_group_commit(lmdb_store):
    await asyncio.gather(*(lmdb_store.put_many([(b"88.118.8/%03d" % i, b"v")]) for i in range(200)))
    assert lmdb_store.count() == 200
    assert lmdb_store.commits <= 3


async def test_lmdb_sequential_writes_commit_each(lmdb_store):
    for i in range(3):
        await lmdb_store.put_many([(b"88.118.8/%d" % i, b"v")])
    assert lmdb_store.commits == 3


async def test_lmdb_data_survives_close_and_reopen(tmp_path):
    s = open_store(f"lmdb:{tmp_path}")
    await s.put_many([(b"88.118.8/%03d" % i, b"v%d" % i) for i in range(50)] + [(b"88.118.9/A", b"a")])
    assert await s.delete(b"88.118.8/000")
    await s.close()

    s = open_store(f"lmdb:{tmp_path}")
    try:
        assert s.get(b"88.118.8/001") == b"v1"
        assert s.get(b"88.118.8/000") is None
        assert s.count() == 50
        assert dict(s.groups()) == {b"88.118.8": 49, b"88.118.9": 1}
        assert len(s.scan(b"88.118.8/", limit=1000)) == 49
        # and it keeps counting correctly after the restart
        await s.put_many([(b"88.118.8/001", b"again"), (b"88.118.8/new", b"n")])
        assert s.count(b"88.118.8") == 50
    finally:
        await s.close()


async def test_close_waits_for_queued_writes(tmp_path):
    s = open_store(f"lmdb:{tmp_path}")
    writes = [asyncio.ensure_future(s.put_many([(b"88.118.8/%d" % i, b"v")])) for i in range(20)]
    await asyncio.sleep(0)
    await s.close()
    await asyncio.gather(*writes)
    s = open_store(f"lmdb:{tmp_path}")
    try:
        assert s.count() == 20
    finally:
        await s.close()


CRASHER = textwrap.dedent("""
    import asyncio, os, sys
    from resolver.store import open_store

    async def main():
        store = open_store("lmdb:" + sys.argv[1])
        await store.put_many([(b"88.118.8/CRASH", b"acknowledged"), (b"88.118.8/OTHER", b"too")])
        print("ACK", flush=True)
        os._exit(1)  # no close, no flush, no atexit: as if the process died

    asyncio.run(main())
""")


def test_lmdb_acknowledged_write_survives_a_crash(tmp_path):
    path = str(tmp_path / "db")
    proc = subprocess.run([sys.executable, "-c", CRASHER, path], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.stdout.strip() == "ACK", proc.stderr
    assert proc.returncode == 1

    async def check():
        s = open_store(f"lmdb:{path}")
        try:
            assert s.get(b"88.118.8/CRASH") == b"acknowledged"
            assert s.get(b"88.118.8/OTHER") == b"too"
            assert s.count() == 2
            assert s.count(b"88.118.8") == 2
        finally:
            await s.close()

    asyncio.run(check())
