"""The LMDB store's write plumbing (``resolver.store.lmdb``): one long-lived writer thread
group-commits what is queued; a failed commit fails all its writes and stores nothing of
them; writes queued while a commit runs go in the next; ``close`` waits for queued writes.
And ``get_many``: every key of a batch read from one snapshot. Commits are held at a gate
(a threading.Event) so the order of events is fixed, never timed."""
from __future__ import annotations

import asyncio
import threading

import pytest

from resolver.store import open_store


async def queued(store) -> None:
    """Let the tasks just made run and the loop hand their writes to the (held) writer: two
    turns of the loop, no time (each task's ``_submit``, then the one ``_flush``)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store._queue.qsize() == 1 and not store._pending  # one hand-over for all of them


class Gate:
    """Wraps a store's ``_commit``: the first commit waits at the gate; every batch's keys
    are recorded. ``entered`` is set once the first commit is inside."""

    def __init__(self, store) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.batches: list[list[bytes]] = []
        self.commit = store._commit
        store._commit = self

    def __call__(self, batch):
        self.batches.append([k for puts, *_ in batch for k, _ in puts])
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return self.commit(batch)

    async def inside(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30)


@pytest.fixture
async def store(tmp_path):
    s = open_store(f"lmdb:{tmp_path / 'db'}")
    yield s
    await s.close()


@pytest.mark.parametrize("url", ["memory:", "lmdb"])
async def test_get_many_reads_each_key_in_order(url, tmp_path):
    s = open_store(url if url == "memory:" else f"lmdb:{tmp_path / 'db'}")
    try:
        await s.put_many([(b"88.118.8/a", b"A"), (b"88.118.8/c", b"C"), (b"88.118.8/t", b"")])
        assert s.get_many([b"88.118.8/c", b"88.118.8/b", b"88.118.8/a", b"88.118.8/t"]) == \
            [b"C", None, b"A", b""]
        assert s.get_many([]) == []
    finally:
        await s.close()


async def test_writes_queued_during_a_commit_go_in_the_next_one(store):
    gate = Gate(store)
    first = asyncio.ensure_future(store.put_many([(b"88.118.8/1", b"1")]))
    await gate.inside()
    later = [asyncio.ensure_future(store.put_many([(b"88.118.8/%d" % i, b"v")]))
             for i in (2, 3, 4)]
    await queued(store)
    gate.release.set()
    await asyncio.gather(first, *later)
    assert gate.batches == [[b"88.118.8/1"], [b"88.118.8/2", b"88.118.8/3", b"88.118.8/4"]]
    assert store.commits == 2
    assert store.count() == 4


async def test_a_failed_commit_fails_every_write_in_it_and_stores_none(store):
    gate = Gate(store)
    first = asyncio.ensure_future(store.put_many([(b"88.118.8/ok", b"1")]))
    await gate.inside()
    good = asyncio.ensure_future(store.put_many([(b"88.118.8/good", b"g")]))
    gone = asyncio.ensure_future(store.delete(b"88.118.8/ok"))
    bad = asyncio.ensure_future(store.put_many([(b"88.118.8/" + b"x" * 600, b"too long key")]))
    await queued(store)
    gate.release.set()
    await first
    for fut in (good, gone, bad):
        with pytest.raises(Exception):
            await fut
    assert store.get(b"88.118.8/good") is None
    assert store.get(b"88.118.8/ok") == b"1"  # the failed commit's delete did not happen
    assert store.log_read(0, 1 << 20).last == 1  # nor was anything of it logged
    # the writer goes on: the next commit works
    await store.put_many([(b"88.118.8/after", b"a")])
    assert store.get(b"88.118.8/after") == b"a"


async def test_close_waits_for_writes_queued_behind_a_running_commit(tmp_path):
    s = open_store(f"lmdb:{tmp_path / 'db'}")
    gate = Gate(s)
    first = asyncio.ensure_future(s.put_many([(b"88.118.8/1", b"1")]))
    await gate.inside()
    later = [asyncio.ensure_future(s.put_many([(b"88.118.8/q%d" % i, b"q")])) for i in range(5)]
    await queued(s)
    closing = asyncio.ensure_future(s.close())
    await asyncio.sleep(0)
    assert not closing.done()
    gate.release.set()
    await closing
    assert all(f.done() and f.exception() is None for f in [first, *later])
    s = open_store(f"lmdb:{tmp_path / 'db'}")
    try:
        assert s.count() == 6
    finally:
        await s.close()


async def test_apply_and_writes_share_the_writer(store):
    """A mirror's ``apply`` runs on the same writer thread, in its own transaction."""
    gate = Gate(store)
    first = asyncio.ensure_future(store.put_many([(b"88.118.8/1", b"1")]))
    await gate.inside()
    applied = asyncio.ensure_future(store.apply([(b"88.118.8/m", b"m")], b"pos"))
    after = asyncio.ensure_future(store.put_many([(b"88.118.8/2", b"2")]))
    await queued(store)
    gate.release.set()
    await asyncio.gather(first, applied, after)
    assert store.following() == b"pos"
    assert store.get_many([b"88.118.8/1", b"88.118.8/m", b"88.118.8/2"]) == [b"1", b"m", b"2"]
    assert store.commits == 3
