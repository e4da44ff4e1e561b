"""Gathered commits (``resolver.store.lmdb``): after a commit of several writes, the writer
waits (at most ``gather`` s) until the next commit holds as many writes as were in flight,
so clients answered together are committed together again; a lone write never waits.

The writer's queue is wrapped (``Watched``) so a test knows when the writer is waiting to
gather: events are ordered by that, never timed. ``gather`` is an hour: a wait that should
not happen would hang the test (each await is guarded).
"""
from __future__ import annotations

import asyncio
import queue
import threading

from resolver.store.lmdb import LmdbStore

HOUR = 3600.0


class Watched:
    """The writer's queue, with ``gathering`` set when the writer waits with a timeout (the
    gathering wait; its first wait for work has none)."""

    def __init__(self) -> None:
        self.inner = queue.SimpleQueue()
        self.gathering = threading.Event()

    def put(self, item) -> None:
        self.inner.put(item)

    def get_nowait(self):
        return self.inner.get_nowait()

    def qsize(self) -> int:
        return self.inner.qsize()

    def get(self, block: bool = True, timeout: float | None = None):
        if timeout is not None:
            self.gathering.set()
        return self.inner.get(block, timeout)


def store_at(path) -> tuple[LmdbStore, Watched]:
    store = LmdbStore(str(path), map_size_gib=0.1, gather=HOUR)
    store._queue = watched = Watched()  # before the writer starts (at the first write)
    return store, watched


async def guarded(aw):
    return await asyncio.wait_for(aw, 30)


async def test_writes_answered_together_are_committed_together(tmp_path):
    store, watched = store_at(tmp_path)
    try:
        await guarded(asyncio.gather(store.put_many([(b"88.118/a1", b"1")]),
                                     store.put_many([(b"88.118/b1", b"1")])))
        assert store.commits == 1
        late = asyncio.Event()

        async def second_writer():
            await late.wait()
            await store.put_many([(b"88.118/b2", b"2")])
        b = asyncio.ensure_future(second_writer())
        a = asyncio.ensure_future(store.put_many([(b"88.118/a2", b"2")]))
        # two writes were in flight: a2 alone waits for the other one
        assert await guarded(asyncio.get_running_loop().run_in_executor(
            None, watched.gathering.wait, 30))
        assert not a.done() and store.get(b"88.118/a2") is None
        late.set()
        await guarded(asyncio.gather(a, b))
        assert store.commits == 2  # a2 and b2 in one commit
        assert store.get(b"88.118/a2") == store.get(b"88.118/b2") == b"2"
    finally:
        await store.close()


async def test_a_lone_write_never_waits(tmp_path):
    store, watched = store_at(tmp_path)
    try:
        for i in range(5):
            await guarded(store.put_many([(b"88.118/k%d" % i, b"v")]))
        assert store.commits == 5 and not watched.gathering.is_set()
    finally:
        await store.close()


async def test_close_does_not_wait_for_writes_that_never_come(tmp_path):
    store, watched = store_at(tmp_path)
    await guarded(asyncio.gather(store.put_many([(b"88.118/a", b"1")]),
                                 store.put_many([(b"88.118/b", b"1")])))
    last = asyncio.ensure_future(store.put_many([(b"88.118/c", b"1")]))
    assert await guarded(asyncio.get_running_loop().run_in_executor(
        None, watched.gathering.wait, 30))
    await guarded(store.close())  # the stop ends the gathering: c is committed, then closed
    assert last.done() and last.result() == set()
