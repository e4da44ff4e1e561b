"""Serve-stale (RFC 8767), negative caching (RFC 2308) and prefetch at the recursive node.

The rules are ``resolver.resolution``'s and ``resolver.cache``'s, driven by hand with a
``FakeClock``; the client deadline and the background work are ``RecursiveNode``'s, checked
with its upstream replaced by fakes that answer when an event is set (never by sleeping).
"""
from __future__ import annotations

import asyncio

import orjson
import pytest

from resolver import errors, identifiers, records
from resolver.cache import TTLCache
from resolver.config import CacheConfig, Config
from resolver.metrics import NodeMetrics, resilience_rows
from resolver.recursive import RecursiveNode
from resolver.records import Answer, Value
from resolver.resolution import (AskNode, AskTop, Caches, Outcome, Site, negative_ttl,
                                 on_deadline, served, steps)
from network_fixtures import FakeClock

SITE = Site("88.118", "http://127.0.0.1:9002", "127.0.0.1:10002")
TOP = Site("0.NA", "", "127.0.0.1:10000")
H1 = "88.118.8/SN1"
GUARD = 10.0  # s: a bound against a hang, never an ordering device


def answer(text: str, *ttls: int, tag: str = "v1") -> Answer:
    return Answer(records.encode(text, [
        Value(i + 1, "URL", f"https://ex.com/{tag}/{i}", ttl=t) for i, t in enumerate(ttls)]))


def not_found(sent_ttl: float | None = None) -> errors.HandleError:
    exc = errors.HandleError(errors.HANDLE_NOT_FOUND, "Handle not found", handle=H1)
    if sent_ttl is not None:
        exc.negative_ttl = sent_ttl  # what a serving node would send (RFC 2308's SOA minimum)
    return exc


class World:
    def __init__(self, config: CacheConfig | None = None) -> None:
        self.config = config or CacheConfig()
        self.clock = FakeClock(1_000_000.0)
        self.caches = Caches.from_config(self.config)

    def steps(self, text: str = H1):
        h = identifiers.parse(text)
        return steps(h.text, h.key, identifiers.make_key(h.prefix), h.prefix,
                     caches=self.caches, config=self.config, clock=self.clock, top=TOP)

    def resolve(self, data: Answer, ttls) -> Outcome:
        gen = self.steps()
        assert next(gen) == AskTop("88.118.8")
        assert gen.send((SITE, 3600)) == AskNode(SITE, H1)
        with pytest.raises(StopIteration) as done:
            gen.send((data, list(ttls)))
        return done.value.value

    def fail(self, exc: BaseException) -> Outcome:
        """A resolution whose node does not answer (the delegation is cached)."""
        gen = self.steps()
        need = next(gen)
        if isinstance(need, AskTop):
            need = gen.send((SITE, 3600))
        assert need == AskNode(SITE, H1)
        with pytest.raises(StopIteration) as done:
            gen.throw(exc)
        return done.value.value


def ttls_of(ans: Answer) -> list[int]:
    return [v["ttl"] for v in orjson.loads(ans.public_json)]


# ----------------------------------------------------------------- serve-stale, pure steps

def test_stale_answer_served_on_failure_with_ttl_30() -> None:
    w = World()
    data = answer(H1, 300, 600)
    assert w.resolve(data, [300, 600]).source == "upstream"
    w.clock.advance(301)  # expired
    out = w.fail(errors.PeerUnavailable("down"))
    assert out == Outcome(data, "stale")
    client = served(out, w.config)
    assert ttls_of(client) == [30, 30] and client.ttls == (30, 30)
    assert [r[3] for r in client.rows] == [r[3] for r in data.rows]  # same values otherwise
    assert ttls_of(served(Outcome(data, "cache"), w.config)) == [300, 600]  # fresh: node's TTLs


def test_stale_answer_ttl_follows_config() -> None:
    w = World(CacheConfig(stale_answer_ttl=7))
    assert ttls_of(served(Outcome(answer(H1, 300), "stale"), w.config)) == [7]


def test_max_staleness_is_one_day_by_default_and_respected() -> None:
    w = World()
    assert w.config.answer_stale == 86400.0 and w.config.delegation_stale == 86400.0
    data = answer(H1, 300)
    w.resolve(data, [300])
    w.clock.advance(300 + 86400 - 1)  # one second short of the maximum staleness
    assert w.fail(errors.PeerUnavailable("down")).source == "stale"
    w.clock.advance(1)  # exactly the maximum staleness: gone
    with pytest.raises(errors.PeerUnavailable):
        w.fail(errors.PeerUnavailable("down"))


def test_max_staleness_is_configurable() -> None:
    w = World(CacheConfig(answer_stale=100))
    w.resolve(answer(H1, 300), [300])
    w.clock.advance(300 + 100)
    with pytest.raises(errors.PeerUnavailable):
        w.fail(errors.PeerUnavailable("down"))


def test_on_deadline_serves_only_a_stale_entry() -> None:
    cache = TTLCache(max_entries=10, stale_window=100)
    cache.put(b"k", "v", ttl=10, now=0)
    assert on_deadline(None) is None
    assert on_deadline(cache.get(b"k", 5)) is None  # fresh entries never wait
    assert on_deadline(cache.get(b"k", 50)) == Outcome("v", "stale")


# ----------------------------------------------------------------- RFC 2308 negative TTL

def test_negative_ttl_rfc2308_sent_config_and_cap() -> None:
    config = CacheConfig(negative_ttl=5, max_negative_ttl=600)
    assert negative_ttl(not_found(), config) == 5            # nothing sent: the config's
    assert negative_ttl(not_found(20), config) == 20          # the serving node's
    assert negative_ttl(not_found(86400), config) == 600      # capped
    assert negative_ttl(not_found(), CacheConfig(negative_ttl=9000,
                                                 max_negative_ttl=600)) == 600


def test_negative_entry_lives_for_the_capped_ttl() -> None:
    w = World(CacheConfig(max_negative_ttl=60, negative_stale=0))
    gen = w.steps()
    next(gen)
    gen.send((SITE, 3600))
    with pytest.raises(StopIteration) as done:
        gen.throw(not_found(sent_ttl=3600))
    assert done.value.value.source == "negative"
    w.clock.advance(59.9)
    with pytest.raises(StopIteration):  # still remembered: nothing asked
        next(w.steps())
    w.clock.advance(0.1)  # 60 s, the cap, not the 3600 s sent
    assert next(w.steps()) == AskNode(SITE, H1)


def test_negative_entries_have_their_own_stale_window() -> None:
    cache = TTLCache(max_entries=10, stale_window=86400, negative_stale=60)
    cache.put_negative(b"n", ttl=5, now=0)
    cache.put(b"p", "v", ttl=5, now=0)
    assert cache.get(b"n", 64).stale and cache.get(b"p", 64).stale
    assert cache.get(b"n", 65) is None  # past its 60 s window
    assert cache.get(b"p", 65).stale    # answers keep their day


# ----------------------------------------------------------------- prefetch, pure

def test_prefetch_once_in_the_last_tenth_of_the_ttl() -> None:
    cache = TTLCache(max_entries=10, prefetch_window=0.1)
    cache.put(b"k", "v", ttl=100, now=0)
    assert not cache.get(b"k", 89.9).prefetch
    assert cache.get(b"k", 90).prefetch        # the first hit in the window asks for it
    assert not cache.get(b"k", 95).prefetch    # once per entry
    cache.put(b"k", "v2", ttl=100, now=96)     # the refresh landed: a new entry, a new window
    assert not cache.get(b"k", 185).prefetch
    assert cache.get(b"k", 186).prefetch


def test_no_prefetch_for_a_cold_or_negative_entry_or_when_off() -> None:
    cache = TTLCache(max_entries=10, prefetch_window=0.1)
    cache.put(b"cold", "v", ttl=100, now=0)
    assert cache.get(b"cold", 100) is None     # nobody asked in the window: it just expires
    cache.put_negative(b"n", ttl=100, now=0)
    assert not cache.get(b"n", 95).prefetch
    off = TTLCache(max_entries=10)
    off.put(b"k", "v", ttl=100, now=0)
    assert not off.get(b"k", 99).prefetch


def test_steps_flag_a_prefetch_hit_as_refresh() -> None:
    w = World()  # prefetch_window 0.1 by default
    data = answer(H1, 100)
    w.resolve(data, [100])
    w.clock.advance(50)
    assert next_outcome(w) == Outcome(data, "cache")
    w.clock.advance(45)
    assert next_outcome(w) == Outcome(data, "cache", refresh=True)
    assert next_outcome(w) == Outcome(data, "cache")


def next_outcome(w: World) -> Outcome:
    with pytest.raises(StopIteration) as done:
        next(w.steps())
    return done.value.value


# ----------------------------------------------------------------- RecursiveNode

class Upstream:
    """A serving node that answers each resolve when ``release`` is set; ``version`` tags
    what it answers, ``error`` what it raises instead."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0
        self.version = "v1"
        self.error: BaseException | None = None

    async def ask_top(self, prefix: str):
        return SITE, 3600

    async def ask_node(self, site: Site, handle: str):
        self.calls += 1
        self.asked.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        data = answer(handle, 100, tag=self.version)
        return data, list(data.ttls)


@pytest.fixture
async def node():
    config = Config().with_values("test", {"cache": {"stale_deadline": 0.01}})
    n = RecursiveNode("r", "127.0.0.1:9", config, clock=FakeClock(1_000_000.0))
    up = n.up = Upstream()
    n._ask_top, n._ask_node = up.ask_top, up.ask_node
    yield n
    await n.close()


async def settle(n: RecursiveNode) -> None:
    """Wait for every background resolution of ``n`` to land."""
    await asyncio.wait_for(asyncio.gather(*n._inflight.values(), return_exceptions=True),
                           GUARD)


async def test_stale_served_on_deadline_and_refresh_lands(node) -> None:
    h = node.parse(H1)
    node.up.release.set()
    assert ttls_of(await node.resolve(h)) == [100]
    node.clock.advance(101)  # expired
    node.up.release.clear()
    node.up.version = "v2"
    got = await asyncio.wait_for(node.resolve(h), GUARD)  # the upstream is held: deadline
    assert ttls_of(got) == [30] and "v1" in got.rows[0][3]
    assert node.stats["stale_deadline"] == 1 and node.stats["stale"] == 1
    assert h.key in node._inflight  # the resolution goes on in the background
    node.up.release.set()
    await settle(node)
    fresh = node.cached(H1)  # the refresh filled the cache: fresh, the node's TTLs
    assert fresh is not None and "v2" in fresh.rows[0][3] and ttls_of(fresh) == [100]
    assert node.up.calls == 2


async def test_stale_served_on_failure_is_counted_as_failure(node) -> None:
    h = node.parse(H1)
    node.up.release.set()
    await node.resolve(h)
    node.clock.advance(101)
    node.up.error = errors.PeerUnavailable("down")
    got = await node.resolve(h)
    assert ttls_of(got) == [30]
    rows = {(m, label): n for m, label, n in resilience_rows(node)}
    assert rows[("stale", "failure")] == 1 and rows[("stale", "deadline")] == 0
    text = NodeMetrics(node).exposition().decode()
    assert 'idsim_stale_answers_total{node="r",process="0",reason="failure"} 1.0' in text


async def test_no_deadline_without_a_stale_entry(node) -> None:
    """A miss has nothing to serve: it waits for the upstream, however long."""
    h = node.parse(H1)
    task = asyncio.ensure_future(node.resolve(h))
    await asyncio.wait_for(node.up.asked.wait(), GUARD)
    # ten times the deadline passes with the upstream held: the client is still waiting
    done, _ = await asyncio.wait({task}, timeout=10 * node.config.cache.stale_deadline)
    assert not done
    node.up.release.set()
    assert ttls_of(await asyncio.wait_for(task, GUARD)) == [100]
    assert node.stats["stale_deadline"] == 0


async def test_prefetch_once_then_coalesced(node) -> None:
    h = node.parse(H1)
    node.up.release.set()
    await node.resolve(h)
    node.clock.advance(50)
    assert node.cached(H1) is not None
    assert node.up.calls == 1 and node.stats["prefetches"] == 0  # not yet in the last 10 %
    node.clock.advance(45)
    node.up.release.clear()
    node.up.version = "v2"
    assert node.cached(H1) is not None        # served from cache at once...
    assert node.stats["prefetches"] == 1      # ...and refreshed in the background
    assert node.cached(H1) is not None
    await node.resolve(node.parse("hdl:" + H1))  # another entry point, the same entry
    assert node.stats["prefetches"] == 1      # once per entry
    node.up.release.set()
    await settle(node)
    assert node.up.calls == 2
    node.clock.advance(10)  # past the first answer's expiry: the refreshed one is fresh
    assert "v2" in node.cached(H1).rows[0][3]
    assert node.up.calls == 2


async def test_no_prefetch_for_a_cold_entry(node) -> None:
    h = node.parse(H1)
    node.up.release.set()
    await node.resolve(h)
    node.clock.advance(50)
    node.cached(H1)  # asked, but not near expiry
    node.clock.advance(51)  # nobody asked in the last 10 %: expired
    assert node.stats["prefetches"] == 0 and node.up.calls == 1


# ----------------------------------------------------------------- failure recheck

def test_stale_serves_at_once_while_every_peer_is_down() -> None:
    w = World()
    data = answer(H1, 100)
    w.resolve(data, [100])
    w.clock.advance(101)
    h = identifiers.parse(H1)
    gen = steps(h.text, h.key, identifiers.make_key(h.prefix), h.prefix, caches=w.caches,
                config=w.config, clock=w.clock, top=TOP, down=lambda site: site == SITE)
    with pytest.raises(StopIteration) as done:
        next(gen)  # nothing asked: the serving node is known to be down
    assert done.value.value == Outcome(data, "stale")
    # with the node not known to be down, it is asked
    gen = steps(h.text, h.key, identifiers.make_key(h.prefix), h.prefix, caches=w.caches,
                config=w.config, clock=w.clock, top=TOP, down=lambda site: False)
    assert next(gen) == AskNode(SITE, H1)


def test_a_miss_asks_even_when_every_peer_is_down() -> None:
    w = World()
    h = identifiers.parse(H1)
    gen = steps(h.text, h.key, identifiers.make_key(h.prefix), h.prefix, caches=w.caches,
                config=w.config, clock=w.clock, top=TOP, down=lambda site: True)
    assert next(gen) == AskTop(h.prefix)  # nothing to serve: the last resort is to ask
    assert gen.send((SITE, 3600)) == AskNode(SITE, H1)


async def test_failure_recheck_no_call_while_the_node_is_in_backoff() -> None:
    config = Config().with_values("test", {"cache": {"peer_failures": 2, "peer_backoff": 5}})
    node = RecursiveNode("r", "127.0.0.1:9", config, clock=FakeClock(1_000_000.0))
    calls: list[str] = []

    async def call_peer(addr: str, method: str, arg: str):
        calls.append(method)
        if method == "delegate":
            return [SITE.wire(), 3600]
        if node.up:
            return answer(arg, 100).data
        raise errors.PeerUnavailable("down")
    node._call_peer, node.up = call_peer, True
    try:
        h = node.parse(H1)
        await node.resolve(h)
        node.clock.advance(101)
        node.up = False
        for _ in range(2):  # each tries the node, fails, serves stale
            assert ttls_of(await node.resolve(h)) == [30]
        assert calls.count("resolve") == 3
        for _ in range(3):  # in back-off: stale at once, no call
            assert ttls_of(await node.resolve(h)) == [30]
        assert calls.count("resolve") == 3 and node.stats["stale"] == 5
        node.clock.advance(5)  # the window has passed: one probe, which succeeds
        node.up = True
        assert ttls_of(await node.resolve(h)) == [100]
        assert calls.count("resolve") == 4
    finally:
        await node.close()
