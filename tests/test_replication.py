"""The transaction log and the follower (issue 11 part 2): a change and its log entry are
committed together, the log is bounded, several processes share one sequence, and a mirror
that dumps then follows ends with the primary's exact content."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import lmdb
import pytest

from resolver import replication
from resolver.clock import FakeClock
from resolver.config import Config, ReplicationConfig
from resolver.nodes import SecondaryNode
from resolver.replication import DumpPage, Follower, ReadLog, digest
from resolver.rpc_auth import Caller, role_of
from resolver.store.lmdb import LmdbStore
from resolver.store.memory import MemoryStore

MIRROR = Caller("88.118~Beijing", role_of("88.118~Beijing"))
BIG = 1 << 30


def lmdb_store(path, **kw) -> LmdbStore:
    return LmdbStore(str(path), map_size_gib=0.25, **kw)


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
async def test_log_holds_each_change_in_order(tmp_path, kind):
    store = lmdb_store(tmp_path) if kind == "lmdb" else MemoryStore()
    await store.put_many([(b"88.118/a", b"1"), (b"88.118/b", b"2")])
    assert await store.delete(b"88.118/a")
    assert not await store.delete(b"88.118/missing")  # nothing changed: nothing logged
    read = store.log_read(0, BIG)
    assert (read.first, read.last) == (1, 3)
    assert [(seq, k, v) for seq, _, k, v in read.entries] == [
        (1, b"88.118/a", b"1"), (2, b"88.118/b", b"2"), (3, b"88.118/a", None)]
    assert [e[0] for e in store.log_read(2, BIG).entries] == [3]
    await store.close()


async def test_a_failed_commit_writes_neither_the_change_nor_its_log_entry(tmp_path):
    store = lmdb_store(tmp_path)
    await store.put_many([(b"88.118/ok", b"1")])
    with pytest.raises(lmdb.Error):  # the second key is too long for LMDB: the commit fails
        await store.put_many([(b"88.118/new", b"2"), (b"88.118/" + b"k" * 600, b"3")])
    assert store.get(b"88.118/new") is None
    read = store.log_read(0, BIG)
    assert read.last == 1 and [e[2] for e in read.entries] == [b"88.118/ok"]
    await store.put_many([(b"88.118/after", b"4")])  # the next commit takes the next number
    assert [e[0] for e in store.log_read(0, BIG).entries] == [1, 2]
    await store.close()


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
async def test_the_log_keeps_its_entry_and_age_bounds(tmp_path, kind):
    clock = FakeClock()
    log = ReplicationConfig(log_entries=3, log_age=10.0)
    store = lmdb_store(tmp_path, log=log, clock=clock) if kind == "lmdb" else \
        MemoryStore(log=log, clock=clock)
    for i in range(5):
        await store.put_many([(b"88.118/%d" % i, b"v")])
    read = store.log_read(0, BIG)
    assert (read.first, read.last, len(read.entries)) == (3, 5, 3)
    clock.advance(11)
    await store.put_many([(b"88.118/late", b"v")])
    read = store.log_read(0, BIG)
    assert (read.first, read.last) == (6, 6)
    assert store.count() == 6  # the records stay; only the log is trimmed
    await store.close()


async def test_bulk_write_gives_the_log_a_new_epoch(tmp_path):
    store = lmdb_store(tmp_path)
    await store.put_many([(b"88.118/a", b"1")])
    before = store.log_read(0, BIG)
    store.bulk_write([(b"88.118/z", b"2")])
    after = store.log_read(before.last, BIG)
    assert after.epoch != before.epoch and not after.entries
    assert replication.must_dump(after.epoch, after.first, after.last, before.epoch,
                                 before.last)
    await store.close()


def test_two_processes_committing_to_one_store_never_share_a_sequence_number(tmp_path):
    n = 200
    child = textwrap.dedent(f"""
        import asyncio, sys
        from resolver.store.lmdb import LmdbStore
        async def main():
            s = LmdbStore({str(tmp_path)!r}, map_size_gib=0.25)
            print("ready", flush=True)
            sys.stdin.readline()
            for i in range({n}):
                await s.put_many([(b"88.118/child-%d" % i, b"c")])
            await s.close()
        asyncio.run(main())
    """)
    store = lmdb_store(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()

        async def mine():
            for i in range(n):
                await store.put_many([(b"88.118/parent-%d" % i, b"p")])
        asyncio.run(mine())
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    entries = store.log_read(0, BIG).entries
    assert [e[0] for e in entries] == list(range(1, 2 * n + 1))
    assert len({e[2] for e in entries}) == 2 * n
    asyncio.run(store.close())


# ---------------------------------------------------------------------- follower, pure
def test_the_follower_dumps_then_follows_and_dumps_again_when_the_log_moved_on():
    f = Follower(None, now=100.0)
    assert f.need() == DumpPage(None)
    a = f.dumped([b"E", 7, [[b"k1", b"v1"]], True], now=100.0)
    assert a.clear and a.changes == [(b"k1", b"v1")]
    assert f.need() == DumpPage(None)  # nothing moves until the apply is durable
    f.applied(a, now=100.0)
    assert f.need() == DumpPage(b"k1")
    b = f.dumped([b"E", 9, [[b"k2", b"v2"]], False], now=101.0)
    assert not b.clear
    f.applied(b, now=101.0)
    assert f.need() == ReadLog(b"E", 7)  # the first page's position, not the last one's
    # a restarted mirror resumes from its durable marker
    assert Follower(b.position.marker(), now=0.0).need() == ReadLog(b"E", 7)
    c = f.logged([b"E", 1, 9, [[8, 95.0, b"k3", b"v3"], [9, 96.0, b"k1", None]]], now=102.0)
    assert c.changes == [(b"k3", b"v3"), (b"k1", None)] and c.caught_up
    f.applied(c, now=102.0)
    assert f.need() == ReadLog(b"E", 9) and f.lag(110.0) == 0.0
    assert f.logged([b"E", 20, 25, []], now=103.0) is None  # 10..19 are gone: dump again
    assert f.need() == DumpPage(None) and f.redumps == 1


def test_lag_is_zero_when_caught_up_and_grows_from_the_last_applied_commit_when_behind():
    f = Follower(Follower(None, 0.0).dumped([b"E", 0, [], False], 0.0).position.marker(),
                 now=100.0)
    a = f.logged([b"E", 1, 5, [[1, 100.0, b"a", b"1"], [2, 101.0, b"b", b"2"]]], now=102.0)
    f.applied(a, now=102.0)
    assert not f.caught_up and f.lag(103.5) == pytest.approx(2.5)  # entries 3..5 to come
    f.logged([b"E", 1, 2, []], now=104.0)
    assert f.lag(200.0) == 0.0
    f.failed(now=205.0)  # the primary stopped answering: lag from the last confirmation
    assert f.lag(210.0) == pytest.approx(106.0)
    assert replication.must_dump(b"E", 1, 3, b"E", 4)  # a position the primary never reached


# ---------------------------------------------------------------------- primary side
async def _primary(tmp_path, clock, **repl) -> SecondaryNode:
    config = Config().with_values("test", {"replication": repl}) if repl else Config()
    node = SecondaryNode("88.118", lmdb_store(tmp_path / "primary", log=config.replication,
                                              clock=clock), ["88.118"], config, clock=clock)
    await node.bootstrap("secret")
    return node


async def _follow(f: Follower, methods, store, clock) -> None:
    """Drive ``f`` against the primary's methods until it is caught up."""
    for _ in range(10_000):
        need = f.need()
        if isinstance(need, DumpPage):
            a = f.dumped(methods["repl_dump"].fn(MIRROR, need.after), clock())
        else:
            a = f.logged(await methods["repl_log"].fn(MIRROR, need.epoch, need.seq, 0), clock())
        if a is not None:
            await store.apply(a.changes, a.position.marker(), clear=a.clear)
            f.applied(a, clock())
        elif f.caught_up:
            return
    raise AssertionError("the follower never caught up")


async def test_dump_while_writing_then_follow_converges_to_the_same_content(tmp_path):
    clock = FakeClock()
    primary = await _primary(tmp_path, clock, page_bytes=2000)
    await primary.store.put_many([(b"88.118/%04d" % i, b"x" * 50) for i in range(300)])
    mirror = lmdb_store(tmp_path / "mirror")
    await mirror.put_many([(b"88.118/stale", b"left from before")])  # a dump clears it
    methods = replication.handlers(primary)
    f = Follower(None, clock())
    pages = 0
    while f.need().__class__ is DumpPage:  # writes land between the pages of the dump
        a = f.dumped(methods["repl_dump"].fn(MIRROR, f.need().after), clock())
        await mirror.apply(a.changes, a.position.marker(), clear=a.clear)
        f.applied(a, clock())
        pages += 1
        await primary.store.put_many([(b"88.118/%04d" % (pages * 7), b"changed"),
                                      (b"88.118/new-%d" % pages, b"n")])
        await primary.store.delete(b"88.118/%04d" % (pages * 11))
    assert pages > 3
    await _follow(f, methods, mirror, clock)
    assert digest(mirror) == digest(primary.store)
    assert mirror.get(b"88.118/stale") is None
    await primary.store.put_many([(b"88.118/later", b"l")])  # and it keeps following
    await _follow(f, methods, mirror, clock)
    assert digest(mirror) == digest(primary.store) and mirror.count() == primary.store.count()
    await primary.close()
    await mirror.close()


async def test_a_trimmed_log_makes_the_follower_dump_again_and_still_converge(tmp_path):
    clock = FakeClock()
    primary = await _primary(tmp_path, clock, log_entries=5)
    mirror = MemoryStore()
    methods = replication.handlers(primary)
    f = Follower(None, clock())
    await _follow(f, methods, mirror, clock)
    await primary.store.put_many([(b"88.118/%d" % i, b"v") for i in range(20)])  # > 5 entries
    await _follow(f, methods, mirror, clock)
    assert f.redumps == 1 and digest(mirror) == digest(primary.store)
    await primary.close()


async def test_a_long_poll_returns_when_a_write_lands_and_else_after_its_wait(tmp_path):
    clock = FakeClock()
    primary = await _primary(tmp_path, clock, poll_wait=5.0)
    log = replication.handlers(primary)["repl_log"].fn
    epoch, _, last, _ = await log(MIRROR, b"", 0, 0)
    waiting = asyncio.ensure_future(log(MIRROR, epoch, last, 60))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()  # nothing new: it waits
    await primary.store.put_many([(b"88.118/landed", b"v")])
    reply = await asyncio.wait_for(waiting, 10)
    assert [e[2] for e in reply[3]] == [b"88.118/landed"]
    waiting = asyncio.ensure_future(log(MIRROR, epoch, last + 1, 60))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(5.0)  # the wait is capped at replication.poll_wait
    assert (await asyncio.wait_for(waiting, 10))[3] == []
    await primary.close()


async def test_a_long_poll_sees_a_commit_made_by_another_process(tmp_path):
    clock = FakeClock()
    primary = await _primary(tmp_path, clock, poll_wait=5.0, poll_check=0.05)
    log = replication.handlers(primary)["repl_log"].fn
    epoch, _, last, _ = await log(MIRROR, b"", 0, 0)
    waiting = asyncio.ensure_future(log(MIRROR, epoch, last, 60))
    for _ in range(20):
        await asyncio.sleep(0)
    other = textwrap.dedent(f"""
        import asyncio
        from resolver.store.lmdb import LmdbStore
        async def main():
            s = LmdbStore({str(tmp_path / "primary")!r}, map_size_gib=0.25)
            await s.put_many([(b"88.118/from-another-process", b"v")])
            await s.close()
        asyncio.run(main())
    """)
    assert subprocess.run([sys.executable, "-c", other], timeout=60).returncode == 0
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()  # no signal reaches this process: it finds it at its next check
    clock.advance(0.05)
    reply = await asyncio.wait_for(waiting, 10)
    assert [e[2] for e in reply[3]] == [b"88.118/from-another-process"]
    await primary.close()
