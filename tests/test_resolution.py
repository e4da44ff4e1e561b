"""The resolution rules of ``resolver.resolution``, driven by hand.

``steps()`` and ``locate()`` are generators: these tests call ``next``/``send``/``throw``
themselves, with a ``FakeClock`` and real ``TTLCache`` instances. No sockets, no sleeping.
``drive()`` is checked with small async fakes, and ``RecursiveNode`` (coalescing, the one
cache probe, locating for writes) with its two upstream methods replaced by fakes (its RPC
clients never connect); events are ordered by awaiting events, never by sleeping.
"""
from __future__ import annotations

import asyncio

import pytest

from resolver import errors, identifiers, records
from resolver.cache import TTLCache
from resolver.recursive import RecursiveNode
from resolver.records import Value
from resolver.config import CacheConfig, Config
from resolver.resolution import (NOT_PROBED, AskNode, AskTop, Caches, Outcome, Site, drive,
                                 locate, steps)
from network_fixtures import FakeClock

SITE = Site("88.118", "http://127.0.0.1:9002", "127.0.0.1:10002")
OTHER_SITE = Site("88.201", "http://127.0.0.1:9004", "127.0.0.1:10004")
TOP = Site("0.NA", "", "127.0.0.1:10000")
H1 = "88.118.8/SN000000001"
H2 = "88.118.8/SN000000002"
H3 = "88.118.8/SN000000003"
STALE_WINDOW = 60.0




def record(text: str, *ttls: int) -> bytes:
    """Stored record bytes with one value per TTL given."""
    ttls = ttls or (86400,)
    return records.encode(text, [Value(i + 1, "URL" if i == 0 else f"T{i}", f"https://ex.com/{text}/{i}",
                                       ttl=t) for i, t in enumerate(ttls)])


def not_found(handle: str = H1) -> errors.HandleError:
    return errors.HandleError(errors.HANDLE_NOT_FOUND, "Handle not found", handle=handle)


class World:
    """Caches, limits and clock shared by the resolutions of one test."""

    def __init__(self, *, stale_window: float = STALE_WINDOW, delegation_stale: float = 0.0,
                 config: CacheConfig | None = None) -> None:
        self.clock = FakeClock(1_000_000.0)
        self.caches = Caches(TTLCache(max_entries=1000, stale_window=stale_window),
                             TTLCache(max_entries=1000, stale_window=delegation_stale))
        self.config = config or CacheConfig()

    def steps(self, text: str, *, fresh: bool = False, probe=NOT_PROBED):
        h = identifiers.parse(text)
        return steps(h.text, h.key, identifiers.make_key(h.prefix), h.prefix, caches=self.caches,
                     config=self.config, clock=self.clock, top=TOP, fresh=fresh, probe=probe)

    def locate(self, prefix: str):
        return locate(prefix, identifiers.make_key(prefix), caches=self.caches,
                      config=self.config, clock=self.clock, top=TOP)

    def immediate(self, text: str, *, fresh: bool = False) -> Outcome:
        """The outcome of a resolution that must not ask anything."""
        gen = self.steps(text, fresh=fresh)
        with pytest.raises(StopIteration) as done:
            need = next(gen)
            pytest.fail(f"expected an answer without asking; the generator asked {need!r}")
        return done.value.value

    def full(self, text: str, data: bytes, ttls: list[int], *, site: Site = SITE,
             site_ttl: int = 3600, fresh: bool = False) -> Outcome:
        """A resolution that asks the top-level node and then the node."""
        gen = self.steps(text, fresh=fresh)
        h = identifiers.parse(text)
        assert next(gen) == AskTop(h.prefix)
        assert gen.send((site, site_ttl)) == AskNode(site, h.text)
        return finish(gen, (data, ttls))


def finish(gen, reply) -> Outcome:
    with pytest.raises(StopIteration) as done:
        need = gen.send(reply)
        pytest.fail(f"expected an outcome; the generator asked {need!r}")
    return done.value.value


def finish_throw(gen, exc: BaseException) -> Outcome:
    with pytest.raises(StopIteration) as done:
        need = gen.throw(exc)
        pytest.fail(f"expected an outcome; the generator asked {need!r}")
    return done.value.value


# ----------------------------------------------------------------------------- the happy path

def test_miss_asks_top_then_node_and_returns_upstream() -> None:
    w = World()
    data = record(H1)
    gen = w.steps(H1)
    assert next(gen) == AskTop("88.118.8")
    assert gen.send((SITE, 3600)) == AskNode(SITE, H1)
    out = finish(gen, (data, [86400]))
    assert out == Outcome(data, "upstream")
    assert out.error is None


def test_fresh_cache_hit_answers_without_yielding() -> None:
    w = World()
    data = record(H1)
    w.full(H1, data, [86400])
    w.clock.advance(100)
    assert w.immediate(H1) == Outcome(data, "cache")
    # the cache key folds ASCII case, as the node's keys do
    assert w.immediate(H1.lower()) == Outcome(data, "cache")


def test_delegation_is_cached_per_prefix() -> None:
    w = World()
    w.full(H1, record(H1), [86400])
    gen = w.steps(H2)  # same prefix: the site is known, only the node is asked
    assert next(gen) == AskNode(SITE, H2)
    assert finish(gen, (record(H2), [86400])).source == "upstream"
    # another prefix, even one below the same node, is delegated on its own
    gen = w.steps("88.118.9/X")
    assert next(gen) == AskTop("88.118.9")


def test_delegation_uses_the_site_the_top_named() -> None:
    w = World()
    gen = w.steps("88.201.3/A")
    assert next(gen) == AskTop("88.201.3")
    assert gen.send((OTHER_SITE, 3600)) == AskNode(OTHER_SITE, "88.201.3/A")
    finish(gen, (record("88.201.3/A"), [86400]))
    gen = w.steps("88.201.3/B")
    assert next(gen) == AskNode(OTHER_SITE, "88.201.3/B")


# ----------------------------------------------------------------------------- answer TTLs

def test_answer_cached_for_smallest_value_ttl() -> None:
    w = World()
    data = record(H1, 86400, 60, 3600)
    w.full(H1, data, [86400, 60, 3600])
    w.clock.advance(59.9)
    assert w.immediate(H1) == Outcome(data, "cache")
    w.clock.advance(0.1)  # exactly at expiry: no longer fresh (half-open interval)
    gen = w.steps(H1)
    assert next(gen) == AskNode(SITE, H1)  # the delegation (3600 s) is still fresh
    newer = record(H1, 120)
    assert finish(gen, (newer, [120])) == Outcome(newer, "upstream")
    w.clock.advance(119)
    assert w.immediate(H1) == Outcome(newer, "cache")


def test_answer_ttl_clamped_to_max_and_min() -> None:
    w = World(config=CacheConfig(min_ttl=10, max_ttl=30))
    w.full(H1, record(H1, 86400), [86400])
    gen = w.steps(H2)
    assert next(gen) == AskNode(SITE, H2)
    finish(gen, (record(H2, 1), [1]))
    w.clock.advance(9.5)
    assert w.immediate(H2).source == "cache"  # 1 s raised to the 10 s floor
    w.clock.advance(20)
    assert w.immediate(H1).source == "cache"  # 29.5 s < the 30 s ceiling
    w.clock.advance(0.5)
    gen = w.steps(H1)
    assert next(gen) == AskNode(SITE, H1)


def test_zero_ttl_answer_is_not_cached() -> None:
    w = World()
    w.full(H1, record(H1, 0), [0])
    gen = w.steps(H1)
    assert next(gen) == AskNode(SITE, H1)


def test_record_without_values_uses_the_floor() -> None:
    w = World(config=CacheConfig(min_ttl=5))
    data = records.encode(H1, [])
    w.full(H1, data, [])
    w.clock.advance(4)
    assert w.immediate(H1) == Outcome(data, "cache")
    w.clock.advance(1)
    assert next(w.steps(H1)) == AskNode(SITE, H1)


# ----------------------------------------------------------------------------- not found

def test_not_found_is_cached_negatively_for_negative_ttl() -> None:
    w = World(config=CacheConfig(negative_ttl=5.0))
    gen = w.steps(H1)
    next(gen)
    gen.send((SITE, 3600))
    exc = not_found()
    out = finish_throw(gen, exc)
    assert out.source == "negative" and out.data is None and out.error is exc
    w.clock.advance(4.9)
    assert w.immediate(H1) == Outcome(None, "negative")
    w.clock.advance(0.1)
    gen = w.steps(H1)
    assert next(gen) == AskNode(SITE, H1)
    # it exists now: the positive answer replaces the negative one
    data = record(H1)
    assert finish(gen, (data, [86400])) == Outcome(data, "upstream")
    assert w.immediate(H1) == Outcome(data, "cache")


def test_negative_ttl_follows_config() -> None:
    w = World(config=CacheConfig(negative_ttl=30.0))
    gen = w.steps(H1)
    next(gen)
    gen.send((SITE, 3600))
    finish_throw(gen, not_found())
    w.clock.advance(29)
    assert w.immediate(H1).source == "negative"
    w.clock.advance(1)
    assert next(w.steps(H1)) == AskNode(SITE, H1)


def test_unknown_prefix_at_top_is_cached_negatively() -> None:
    w = World(config=CacheConfig(negative_ttl=5.0))
    gen = w.steps("99.1/X")
    assert next(gen) == AskTop("99.1")
    out = finish_throw(gen, errors.HandleError(errors.HANDLE_NOT_FOUND,
                                               "prefix 99.1 is not registered", handle="99.1"))
    assert out.source == "negative"
    assert w.immediate("99.1/X") == Outcome(None, "negative")
    assert len(w.caches.delegations) == 0


def test_other_errors_propagate_and_are_not_cached() -> None:
    w = World()
    gen = w.steps(H1)
    next(gen)
    gen.send((SITE, 3600))
    exc = errors.HandleError(errors.SERVER_NOT_RESP, "That prefix doesn't live here")
    with pytest.raises(errors.HandleError) as raised:
        gen.throw(exc)
    assert raised.value is exc
    assert next(w.steps(H1)) == AskNode(SITE, H1)  # nothing negative was remembered


# ----------------------------------------------------------------------------- fresh (auth=true)

def test_fresh_skips_the_cache_but_refills_it() -> None:
    w = World()
    old = record(H1, 86400)
    w.full(H1, old, [86400], site_ttl=86400)
    gen = w.steps(H1, fresh=True)
    assert next(gen) == AskNode(SITE, H1)  # despite the fresh cached answer
    new = record(H1, 3600, 3600)
    assert finish(gen, (new, [3600, 3600])) == Outcome(new, "upstream")
    assert w.immediate(H1) == Outcome(new, "cache")  # the refill replaced the old answer
    w.clock.advance(3600)
    assert next(w.steps(H1)) == AskNode(SITE, H1)  # cached with the new TTL


def test_fresh_skips_a_negative_entry() -> None:
    w = World(config=CacheConfig(negative_ttl=60))
    gen = w.steps(H1)
    next(gen)
    gen.send((SITE, 3600))
    finish_throw(gen, not_found())
    gen = w.steps(H1, fresh=True)
    assert next(gen) == AskNode(SITE, H1)
    data = record(H1)
    assert finish(gen, (data, [86400])).source == "upstream"
    assert w.immediate(H1) == Outcome(data, "cache")


def test_fresh_without_a_stale_entry_does_not_serve_stale() -> None:
    """``fresh`` means "not from the cache": an upstream failure is an error."""
    w = World()
    w.full(H1, record(H1, 60), [60])
    w.clock.advance(61)
    gen = w.steps(H1, fresh=True)
    next(gen)
    with pytest.raises(errors.PeerUnavailable):
        gen.throw(errors.PeerUnavailable("down"))


# ----------------------------------------------------------------------------- upstream down

def test_upstream_down_serves_stale_within_window() -> None:
    w = World(stale_window=60)
    data = record(H1, 60)
    w.full(H1, data, [60])
    w.clock.advance(61)  # expired, within the stale window
    gen = w.steps(H1)
    assert next(gen) == AskNode(SITE, H1)
    out = finish_throw(gen, errors.PeerUnavailable("127.0.0.1:10002 did not answer"))
    assert out == Outcome(data, "stale")


def test_upstream_down_past_stale_window_propagates() -> None:
    w = World(stale_window=60)
    w.full(H1, record(H1, 60), [60])
    w.clock.advance(60 + 60)  # past expiry + stale window: gone
    gen = w.steps(H1)
    next(gen)
    exc = errors.PeerUnavailable("down")
    with pytest.raises(errors.PeerUnavailable) as raised:
        gen.throw(exc)
    assert raised.value is exc and raised.value.status == 503 and raised.value.code == 3


def test_upstream_down_without_entry_propagates() -> None:
    w = World()
    gen = w.steps(H1)
    next(gen)
    gen.send((SITE, 3600))
    with pytest.raises(errors.PeerUnavailable):
        gen.throw(errors.PeerUnavailable("down"))
    assert len(w.caches.answers) == 0
    assert next(w.steps(H1)) == AskNode(SITE, H1)  # the failure was not remembered


def test_top_down_with_stale_answer_serves_stale() -> None:
    """Both the answer and the delegation expired, and the top-level node is unreachable."""
    w = World(stale_window=60)
    data = record(H1, 60)
    w.full(H1, data, [60], site_ttl=30)
    w.clock.advance(61)
    gen = w.steps(H1)
    assert next(gen) == AskTop("88.118.8")
    assert finish_throw(gen, errors.PeerUnavailable("top down")) == Outcome(data, "stale")


def test_only_peer_unavailable_serves_stale() -> None:
    w = World(stale_window=60)
    w.full(H1, record(H1, 60), [60])
    w.clock.advance(61)
    gen = w.steps(H1)
    next(gen)
    with pytest.raises(errors.HandleError) as raised:
        gen.throw(errors.HandleError(errors.ERROR, "internal error"))
    assert raised.value.code == errors.ERROR


def test_stale_negative_with_upstream_down_is_still_not_found() -> None:
    w = World(stale_window=60, config=CacheConfig(negative_ttl=5))
    gen = w.steps(H1)
    next(gen)
    gen.send((SITE, 3600))
    finish_throw(gen, not_found())
    w.clock.advance(6)
    gen = w.steps(H1)
    assert next(gen) == AskNode(SITE, H1)
    out = finish_throw(gen, errors.PeerUnavailable("down"))
    assert out.source == "negative" and out.data is None


def test_stale_entry_is_refreshed_when_upstream_answers() -> None:
    w = World(stale_window=60)
    w.full(H1, record(H1, 60), [60])
    w.clock.advance(61)
    gen = w.steps(H1)
    next(gen)
    new = record(H1, 600)
    assert finish(gen, (new, [600])) == Outcome(new, "upstream")
    assert w.immediate(H1) == Outcome(new, "cache")


# ----------------------------------------------------------------------------- delegation TTL

def test_delegation_expires_by_its_ttl() -> None:
    w = World()
    w.full(H1, record(H1, 10), [10], site_ttl=100)
    w.clock.advance(99)
    gen = w.steps(H2)
    assert next(gen) == AskNode(SITE, H2)
    finish(gen, (record(H2, 10), [10]))
    w.clock.advance(1)  # 100 s after the delegation: expired
    gen = w.steps(H3)
    assert next(gen) == AskTop("88.118.8")
    assert gen.send((OTHER_SITE, 50)) == AskNode(OTHER_SITE, H3)  # the new site is used
    finish(gen, (record(H3, 10), [10]))
    w.clock.advance(49)
    gen = w.steps("88.118.8/SN000000004")
    assert next(gen) == AskNode(OTHER_SITE, "88.118.8/SN000000004")


def test_delegation_without_ttl_uses_config_default() -> None:
    w = World(config=CacheConfig(delegation_ttl=500))
    w.full(H1, record(H1, 1), [1], site_ttl=None)
    w.clock.advance(499)
    assert next(w.steps(H2)) == AskNode(SITE, H2)
    w.clock.advance(1)
    assert next(w.steps(H3)) == AskTop("88.118.8")


def test_stale_delegation_is_asked_again() -> None:
    """Within the delegation cache's stale window the top-level node is asked again."""
    w = World(delegation_stale=3600)
    w.full(H1, record(H1, 1), [1], site_ttl=100)
    w.clock.advance(150)
    assert next(w.steps(H2)) == AskTop("88.118.8")


def test_top_down_uses_a_stale_delegation() -> None:
    """The delegation expired but is within its stale window, the answer is not cached, and
    the top-level node cannot be reached: the node the stale delegation names is asked."""
    w = World(delegation_stale=3600)
    w.full(H1, record(H1, 1), [1], site_ttl=100)
    w.clock.advance(150)
    gen = w.steps(H2)
    assert next(gen) == AskTop("88.118.8")
    assert gen.throw(errors.PeerUnavailable("top down")) == AskNode(SITE, H2)
    data = record(H2, 300)
    assert finish(gen, (data, [300])) == Outcome(data, "upstream")


def test_stale_delegation_is_not_renewed_by_use() -> None:
    w = World(delegation_stale=3600)
    w.full(H1, record(H1, 1), [1], site_ttl=100)
    w.clock.advance(150)
    gen = w.steps(H2)
    next(gen)
    gen.throw(errors.PeerUnavailable("top down"))
    finish(gen, (record(H2, 1), [1]))
    w.clock.advance(100 + 3600 - 150)  # the stale window has passed: nothing to fall back on
    gen = w.steps(H3)
    assert next(gen) == AskTop("88.118.8")
    with pytest.raises(errors.PeerUnavailable):
        gen.throw(errors.PeerUnavailable("top down"))


def test_stale_delegation_serves_only_when_the_top_is_unreachable() -> None:
    """The top-level node answering "no such prefix" wins over a stale delegation."""
    w = World(delegation_stale=3600)
    w.full(H1, record(H1, 1), [1], site_ttl=100)
    w.clock.advance(150)
    gen = w.steps(H2)
    next(gen)
    out = finish_throw(gen, errors.HandleError(errors.HANDLE_NOT_FOUND, "prefix unregistered"))
    assert out.source == "negative"


def test_locate_is_the_delegation_rule_alone() -> None:
    w = World(delegation_stale=3600)
    gen = w.locate("88.118.8")
    assert next(gen) == AskTop("88.118.8")
    assert finish(gen, (SITE, 100)) == SITE
    gen = w.locate("88.118.8")  # cached: answered without asking
    with pytest.raises(StopIteration) as done:
        next(gen)
    assert done.value.value == SITE
    w.clock.advance(100)
    gen = w.locate("88.118.8")
    assert next(gen) == AskTop("88.118.8")
    assert finish_throw(gen, errors.PeerUnavailable("top down")) == SITE  # stale, top down
    assert len(w.caches.answers) == 0  # locating touches no answer


def test_locate_without_any_delegation_propagates_top_down() -> None:
    w = World(delegation_stale=3600)
    gen = w.locate("88.118.8")
    next(gen)
    with pytest.raises(errors.PeerUnavailable):
        gen.throw(errors.PeerUnavailable("top down"))


# ----------------------------------------------------------------------------- 0.NA prefix records

def test_prefix_records_are_served_by_the_top_level_node() -> None:
    """``0.NA/<prefix>`` lives at the top-level node: it is asked directly, no delegation."""
    w = World(config=CacheConfig(prefix_record_ttl=500))
    gen = w.steps("0.NA/88.118.8")
    assert next(gen) == AskNode(TOP, "0.NA/88.118.8")
    data = record("0.NA/88.118.8", 60)
    assert finish(gen, (data, [60])) == Outcome(data, "upstream")
    hit = w.caches.delegations.get(identifiers.make_key("0.NA"), w.clock())
    assert hit.value == TOP and hit.expires_at == w.clock() + 500  # config.prefix_record_ttl
    w.clock.advance(600)  # past that TTL the rule still holds: still no question to the top
    assert next(w.steps("0.na/88.201")) == AskNode(TOP, "0.na/88.201")


# ----------------------------------------------------------------------------- one probe

def test_a_probe_given_is_not_repeated() -> None:
    w = World()
    w.full(H1, record(H1, 60), [60])
    w.clock.advance(61)
    h = identifiers.parse(H1)
    probe = w.caches.answers.get(h.key, w.clock())  # the caller's look: stale
    before = (w.caches.answers.hits, w.caches.answers.stale_hits, w.caches.answers.misses)
    gen = w.steps(H1, probe=probe)
    assert next(gen) == AskNode(SITE, H1)
    assert finish_throw(gen, errors.PeerUnavailable("down")).source == "stale"
    assert (w.caches.answers.hits, w.caches.answers.stale_hits,
            w.caches.answers.misses) == before
    gen = w.steps(H2, probe=None)  # the caller looked and found nothing
    assert next(gen) == AskNode(SITE, H2)
    assert w.caches.answers.misses == before[2]


# ----------------------------------------------------------------------------- drive()

class Fakes:
    """Async stand-ins for ``ask_top`` / ``ask_node`` with a call log."""

    def __init__(self, *, site=SITE, site_ttl=3600, answers=None, node_error=None,
                 top_error=None) -> None:
        self.calls: list[tuple] = []
        self.site, self.site_ttl = site, site_ttl
        self.answers = answers or {}
        self.node_error, self.top_error = node_error, top_error

    async def ask_top(self, prefix: str):
        self.calls.append(("top", prefix))
        if self.top_error is not None:
            raise self.top_error
        return self.site, self.site_ttl

    async def ask_node(self, site: Site, handle: str):
        self.calls.append(("node", site, handle))
        if self.node_error is not None:
            raise self.node_error
        return self.answers[handle]


async def test_drive_asks_top_then_node() -> None:
    w = World()
    data = record(H1, 300)
    f = Fakes(answers={H1: (data, [300])})
    out = await drive(w.steps(H1), f.ask_top, f.ask_node)
    assert out == Outcome(data, "upstream")
    assert f.calls == [("top", "88.118.8"), ("node", SITE, H1)]
    out = await drive(w.steps(H1), f.ask_top, f.ask_node)
    assert out == Outcome(data, "cache")
    assert len(f.calls) == 2  # answered from cache: no call


async def test_drive_with_first_need_taken_by_caller() -> None:
    w = World()
    data = record(H1)
    f = Fakes(answers={H1: (data, [86400])})
    gen = w.steps(H1)
    need = next(gen)
    out = await drive(gen, f.ask_top, f.ask_node, first=need)
    assert out == Outcome(data, "upstream")
    assert f.calls == [("top", "88.118.8"), ("node", SITE, H1)]  # the top asked once


async def test_drive_not_found_is_thrown_into_the_steps() -> None:
    w = World(config=CacheConfig(negative_ttl=5))
    f = Fakes(node_error=not_found())
    out = await drive(w.steps(H1), f.ask_top, f.ask_node)
    assert out.source == "negative" and out.error is f.node_error
    out = await drive(w.steps(H1), f.ask_top, f.ask_node)
    assert out == Outcome(None, "negative")
    assert len(f.calls) == 2
    w.clock.advance(5)
    await drive(w.steps(H1), f.ask_top, f.ask_node)
    assert f.calls[-1] == ("node", SITE, H1) and len(f.calls) == 3


async def test_drive_unknown_prefix() -> None:
    w = World()
    f = Fakes(top_error=errors.HandleError(errors.HANDLE_NOT_FOUND, "no such prefix"))
    out = await drive(w.steps("99.9/X"), f.ask_top, f.ask_node)
    assert out.source == "negative"
    assert f.calls == [("top", "99.9")]


async def test_drive_peer_unavailable_stale_or_raise() -> None:
    w = World(stale_window=60)
    data = record(H1, 60)
    ok = Fakes(answers={H1: (data, [60])})
    await drive(w.steps(H1), ok.ask_top, ok.ask_node)
    down = Fakes(node_error=errors.PeerUnavailable("down"))
    w.clock.advance(61)
    assert await drive(w.steps(H1), down.ask_top, down.ask_node) == Outcome(data, "stale")
    with pytest.raises(errors.PeerUnavailable):
        await drive(w.steps(H2), down.ask_top, down.ask_node)


async def test_drive_lets_non_handle_errors_through() -> None:
    w = World()
    f = Fakes(node_error=ValueError("malformed answer"))
    with pytest.raises(ValueError):
        await drive(w.steps(H1), f.ask_top, f.ask_node)


# ----------------------------------------------------------------------------- RecursiveNode

class SlowUpstream:
    """Fake upstream for a RecursiveNode: ``asked`` is set when the node is asked, and it
    answers when ``release`` is set."""

    def __init__(self, *, error: BaseException | None = None) -> None:
        self.asked = asyncio.Event()
        self.release = asyncio.Event()
        self.node_calls = 0
        self.top_calls = 0
        self.error = error
        self.top_error: BaseException | None = None

    async def ask_top(self, prefix: str):
        self.top_calls += 1
        if self.top_error is not None:
            raise self.top_error
        return SITE, 3600

    async def ask_node(self, site: Site, handle: str):
        self.node_calls += 1
        self.asked.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        data = record(handle, 300)
        return records.Answer(data), [300]


@pytest.fixture
async def recursive():
    clock = FakeClock(1_000_000.0)
    node = RecursiveNode("r", "127.0.0.1:9", clock=clock)  # never connects: upstream is faked
    node.fake_clock = clock
    yield node
    await node.close()


def fake_upstream(node: RecursiveNode, up: SlowUpstream) -> None:
    node._ask_top = up.ask_top
    node._ask_node = up.ask_node


async def started(node: RecursiveNode, handle) -> asyncio.Task:
    """A resolve running as a task, returned once it has waited for the first time (it has
    joined or started the upstream call): ``resolve`` runs without a pause up to that wait."""
    running = asyncio.Event()

    async def run():
        running.set()
        return await node.resolve(handle)
    task = asyncio.ensure_future(run())
    await running.wait()
    return task


async def test_recursive_coalesces_identical_questions(recursive) -> None:
    up = SlowUpstream()
    fake_upstream(recursive, up)
    h = recursive.parse(H1)
    tasks = [await started(recursive, h) for _ in range(100)]
    await up.asked.wait()
    assert recursive.stats["coalesced"] == 99
    up.release.set()
    results = await asyncio.gather(*tasks)
    assert up.node_calls == 1 and up.top_calls == 1
    assert all(r.data == record(H1, 300) for r in results)
    assert recursive._inflight == {}


async def test_recursive_coalesced_waiters_share_the_error(recursive) -> None:
    up = SlowUpstream(error=errors.PeerUnavailable("down"))
    fake_upstream(recursive, up)
    h = recursive.parse(H1)
    tasks = [await started(recursive, h) for _ in range(5)]
    await up.asked.wait()
    up.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert up.node_calls == 1
    assert all(isinstance(r, errors.PeerUnavailable) and r.status == 503 for r in results)
    assert all(r.handle == H1 for r in results)
    assert recursive._inflight == {}


async def test_recursive_fresh_is_not_coalesced(recursive) -> None:
    up = SlowUpstream()
    up.release.set()
    fake_upstream(recursive, up)
    h = recursive.parse(H1)
    await asyncio.gather(*(recursive.resolve(h, fresh=True) for _ in range(3)))
    assert up.node_calls == 3


async def test_recursive_waiters_survive_a_cancelled_leader(recursive) -> None:
    up = SlowUpstream()
    fake_upstream(recursive, up)
    h = recursive.parse(H1)
    leader = await started(recursive, h)
    await up.asked.wait()
    waiter = await started(recursive, h)
    assert recursive.stats["coalesced"] == 1
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    up.release.set()
    result = await asyncio.wait_for(waiter, 5.0)  # a guard against a hang, not an order
    assert result.data == record(H1, 300)
    assert up.node_calls == 1


async def test_recursive_waiters_fail_when_leader_fails_unexpectedly(recursive) -> None:
    """A malformed answer fails the leader and every waiter with the same error, at once."""
    up = SlowUpstream(error=ValueError("unpack(b) received extra data"))
    fake_upstream(recursive, up)
    h = recursive.parse(H1)
    leader = await started(recursive, h)
    await up.asked.wait()
    waiter = await started(recursive, h)
    up.release.set()
    with pytest.raises(ValueError):
        await leader
    with pytest.raises(ValueError, match="extra data"):
        await asyncio.wait_for(waiter, 5.0)  # a guard against a hang, not an order
    assert recursive._inflight == {}


# ------------------------------------------------------------------ RecursiveNode: wiring

async def test_recursive_node_takes_every_limit_from_its_config() -> None:
    config = Config().with_values("test", {
        "cache": {"answer_entries": 7, "answer_bytes": 7000, "answer_stale": 11,
                  "delegation_entries": 5, "delegation_stale": 13, "negative_ttl": 17},
        "rpc": {"timeout": 0.7, "connect_timeout": 0.3, "retry_after": 0.2},
        "http": {"forward_timeout": 9}})
    node = RecursiveNode("r", "127.0.0.1:9", config, clock=FakeClock())
    try:
        a, d = node.caches.answers, node.caches.delegations
        assert (a.max_entries, a.max_bytes, a.stale_window) == (7, 7000, 11)
        assert (d.max_entries, d.stale_window) == (5, 13)
        top = node.top
        assert (top.config.timeout, top.config.connect_timeout, top.config.retry_after) == (
            0.7, 0.3, 0.2)
        peer = node._client("127.0.0.1:10")
        assert peer.config is top.config is config.rpc
        await peer.close()
        up = SlowUpstream(error=not_found())
        up.release.set()
        fake_upstream(node, up)
        h = node.parse(H1)
        with pytest.raises(errors.HandleError):
            await node.resolve(h)
        node.clock.advance(16.9)
        with pytest.raises(errors.HandleError):
            await node.resolve(h)
        assert up.node_calls == 1  # "not found" remembered for config.cache.negative_ttl...
        node.clock.advance(0.1)
        with pytest.raises(errors.HandleError):
            await node.resolve(h)
        assert up.node_calls == 2  # ...and no longer
    finally:
        await node.close()


async def test_cached_then_resolve_probes_the_answer_cache_once(recursive) -> None:
    up = SlowUpstream()
    up.release.set()
    fake_upstream(recursive, up)
    answers = recursive.caches.answers
    assert recursive.cached(H1) is None
    await recursive.resolve(recursive.parse(H1))
    assert (answers.misses, answers.hits) == (1, 0)
    assert recursive.cached(H1).data == record(H1, 300)
    assert (answers.misses, answers.hits) == (1, 1)
    # a negative entry found by the probe is answered by resolve without looking again
    up.error = not_found(H2)
    assert recursive.cached(H2) is None
    with pytest.raises(errors.HandleError):
        await recursive.resolve(recursive.parse(H2))
    assert recursive.cached(H2) is None  # a fresh negative entry: a hit, but no answer
    hits = answers.hits
    with pytest.raises(errors.HandleError) as raised:
        await recursive.resolve(recursive.parse(H2))
    assert raised.value.code == errors.HANDLE_NOT_FOUND
    assert answers.hits == hits and up.node_calls == 2
    # resolve without a probe before it (batch, RPC, msgpack) looks itself, once
    up.error = None
    misses = answers.misses
    await recursive.resolve(recursive.parse(H3))
    assert answers.misses == misses + 1


async def test_a_probe_is_only_taken_for_its_own_handle(recursive) -> None:
    up = SlowUpstream()
    up.release.set()
    fake_upstream(recursive, up)
    await recursive.resolve(recursive.parse(H1))
    assert recursive.cached("88.118.8/bad\x00") is None  # probed, never resolved
    assert (await recursive.resolve(recursive.parse(H1))).data == record(H1, 300)
    assert up.node_calls == 1  # the cached answer was found, not the other text's miss


async def test_writes_locate_through_a_stale_delegation(recursive) -> None:
    """Forwarded writes find the serving node by the same rules: with the top-level node
    down, an expired delegation within the stale window still names it."""
    up = SlowUpstream()
    up.release.set()
    fake_upstream(recursive, up)
    assert await recursive.locate("88.118.8") == SITE
    assert await recursive.locate("88.118.8") == SITE
    assert up.top_calls == 1  # cached
    recursive.clock.advance(3600)  # the delegation's TTL
    up.top_error = errors.PeerUnavailable("top down")
    assert await recursive.locate("88.118.8") == SITE
    assert up.top_calls == 2
    recursive.clock.advance(recursive.config.cache.delegation_stale)  # past the stale window
    with pytest.raises(errors.PeerUnavailable):
        await recursive.locate("88.118.8")
