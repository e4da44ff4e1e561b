"""Tests for resolver.cache: TTL expiry, serve-stale, negative entries, LRU by count and bytes."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resolver.cache import Hit, TTLCache, answer_ttl, negative_size

T0 = 1000.0


def test_fresh_hit():
    c = TTLCache(max_entries=10)
    assert c.put(b"20.500/a", b"rec", ttl=60, now=T0, size=3)
    hit = c.get(b"20.500/a", T0 + 59.9)
    assert hit == Hit(value=b"rec", negative=False, stale=False, expires_at=T0 + 60)
    assert c.get(b"20.500/missing", T0) is None


def test_hit_is_frozen():
    c = TTLCache(max_entries=1)
    c.put(b"k", 1, ttl=1, now=T0)
    hit = c.get(b"k", T0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.value = 2  # type: ignore[misc]


def test_expiry_exactly_at_boundary():
    c = TTLCache(max_entries=10, stale_window=0.0)
    c.put(b"k", b"v", ttl=10, now=T0, size=1)
    assert c.get(b"k", T0 + 10 - 1e-9) is not None
    assert c.get(b"k", T0 + 10) is None  # half-open: gone exactly at expires_at
    assert len(c) == 0 and c.bytes_used == 0


def test_stale_window_hit_then_gone():
    c = TTLCache(max_entries=10, stale_window=30)
    c.put(b"k", b"v", ttl=10, now=T0, size=1)
    hit = c.get(b"k", T0 + 10)  # expiry boundary starts the stale window
    assert hit is not None and hit.stale and hit.value == b"v"
    hit = c.get(b"k", T0 + 39.5)
    assert hit is not None and hit.stale
    assert c.get(b"k", T0 + 40) is None  # window is half-open too
    assert len(c) == 0
    assert c.get(b"k", T0 + 11) is None  # dropped for good, not resurrected by going back


def test_negative_entries():
    c = TTLCache(max_entries=10, max_bytes=1000, stale_window=5)
    assert c.put_negative(b"20.500/nope", ttl=30, now=T0)
    assert c.bytes_used == negative_size(b"20.500/nope")
    hit = c.get(b"20.500/nope", T0 + 1)
    assert hit == Hit(value=None, negative=True, stale=False, expires_at=T0 + 30)
    assert c.get(b"20.500/nope", T0 + 31).stale
    assert c.get(b"20.500/nope", T0 + 35) is None
    # a positive answer replaces a negative one and vice versa
    c.put_negative(b"k", ttl=30, now=T0)
    c.put(b"k", b"now exists", ttl=30, now=T0 + 1, size=10)
    assert c.get(b"k", T0 + 2) == Hit(b"now exists", False, False, T0 + 31)
    assert c.bytes_used == 10
    c.put_negative(b"k", ttl=5, now=T0 + 2)
    assert c.get(b"k", T0 + 3).negative
    assert c.bytes_used == negative_size(b"k")


def test_negative_entry_counts_against_bytes():
    c = TTLCache(max_entries=10, max_bytes=negative_size(b"k") - 1)
    assert not c.put_negative(b"k", ttl=30, now=T0)
    assert len(c) == 0 and c.get(b"k", T0) is None


def test_lru_by_entries_touch_protects():
    c = TTLCache(max_entries=3)
    for k in (b"a", b"b", b"c"):
        c.put(k, k, ttl=100, now=T0)
    assert c.get(b"a", T0 + 1) is not None  # a is now most recent; b is LRU
    c.put(b"d", b"d", ttl=100, now=T0 + 2)
    assert c.get(b"b", T0 + 3) is None
    assert [k for k in (b"a", b"c", b"d") if c.get(k, T0 + 3)] == [b"a", b"c", b"d"]
    assert len(c) == 3 and c.evictions == 1
    # a re-put also counts as use
    c.put(b"a", b"a2", ttl=100, now=T0 + 4)  # order now c, d, a
    c.put(b"e", b"e", ttl=100, now=T0 + 5)
    assert c.get(b"c", T0 + 6) is None
    assert c.get(b"a", T0 + 6).value == b"a2"


def test_stale_get_also_touches():
    c = TTLCache(max_entries=2, stale_window=100)
    c.put(b"a", 1, ttl=1, now=T0)
    c.put(b"b", 2, ttl=100, now=T0)
    assert c.get(b"a", T0 + 5).stale  # touched while stale: b becomes LRU
    c.put(b"c", 3, ttl=100, now=T0 + 6)
    assert c.get(b"b", T0 + 7) is None
    assert c.get(b"a", T0 + 7) is not None


def test_eviction_by_bytes_with_replacement():
    c = TTLCache(max_entries=100, max_bytes=100)
    c.put(b"a", b"A", ttl=100, now=T0, size=40)
    c.put(b"b", b"B", ttl=100, now=T0, size=40)
    assert c.bytes_used == 80 and c.evictions == 0
    # replacing b with a bigger value: 40 + 70 > 100, so LRU a must go (not the new b)
    c.put(b"b", b"BIG", ttl=100, now=T0 + 1, size=70)
    assert c.bytes_used == 70 and len(c) == 1 and c.evictions == 1
    assert c.get(b"a", T0 + 2) is None
    assert c.get(b"b", T0 + 2).value == b"BIG"
    # replacing with a smaller value frees bytes
    c.put(b"b", b"s", ttl=100, now=T0 + 3, size=5)
    assert c.bytes_used == 5
    # several LRU entries may go to make room for one
    c.put(b"c", 1, ttl=100, now=T0, size=30)
    c.put(b"d", 1, ttl=100, now=T0, size=30)
    c.put(b"e", 1, ttl=100, now=T0, size=30)  # 95 bytes: fits
    assert len(c) == 4 and c.bytes_used == 95
    c.put(b"f", 1, ttl=100, now=T0, size=60)  # needs b, c, d gone (95 - 65 + 60 = 90)
    assert c.bytes_used == 90 and len(c) == 2 and c.evictions == 4
    assert c.get(b"e", T0) is not None and c.get(b"f", T0) is not None


def test_entry_exactly_max_bytes_is_stored():
    c = TTLCache(max_entries=10, max_bytes=100)
    c.put(b"a", 1, ttl=10, now=T0, size=1)
    assert c.put(b"big", 2, ttl=10, now=T0, size=100)
    assert len(c) == 1 and c.bytes_used == 100 and c.evictions == 1


def test_oversize_entry_not_stored():
    c = TTLCache(max_entries=10, max_bytes=100)
    c.put(b"a", b"small", ttl=10, now=T0, size=10)
    c.put(b"k", b"old", ttl=10, now=T0, size=10)
    assert not c.put(b"k", b"huge", ttl=10, now=T0, size=101)
    # nothing else was evicted for it, and the superseded old value is gone too
    assert c.get(b"a", T0).value == b"small"
    assert c.get(b"k", T0) is None
    assert c.bytes_used == 10 and c.evictions == 0


@pytest.mark.parametrize("ttl", [0, -5, 0.0, float("nan")])
def test_nonpositive_ttl_removes(ttl):
    c = TTLCache(max_entries=10, max_bytes=100)
    c.put(b"k", b"v", ttl=10, now=T0, size=7)
    assert not c.put(b"k", b"v2", ttl=ttl, now=T0 + 1, size=7)
    assert c.get(b"k", T0 + 1) is None
    assert len(c) == 0 and c.bytes_used == 0
    c.put(b"k", b"v", ttl=10, now=T0, size=7)
    assert not c.put_negative(b"k", ttl=ttl, now=T0 + 1)
    assert len(c) == 0 and c.bytes_used == 0


def test_zero_max_entries_stores_nothing():
    c = TTLCache(max_entries=0)
    assert not c.put(b"k", 1, ttl=10, now=T0)
    assert len(c) == 0 and c.evictions == 0


def test_invalid_arguments():
    with pytest.raises(ValueError):
        TTLCache(max_entries=-1)
    with pytest.raises(ValueError):
        TTLCache(max_entries=1, max_bytes=-1)
    with pytest.raises(ValueError):
        TTLCache(max_entries=1, stale_window=-0.1)
    with pytest.raises(ValueError):
        TTLCache(max_entries=1).put(b"k", 1, ttl=1, now=T0, size=-1)


def test_invalidate_and_clear():
    c = TTLCache(max_entries=10, max_bytes=1000)
    c.put(b"a", 1, ttl=10, now=T0, size=10)
    c.put(b"b", 2, ttl=10, now=T0, size=20)
    assert c.invalidate(b"a") and not c.invalidate(b"a")
    assert c.bytes_used == 20 and len(c) == 1
    c.get(b"b", T0)
    c.clear()
    assert len(c) == 0 and c.bytes_used == 0
    assert c.get(b"b", T0) is None
    assert c.hits == 1  # counters survive clear()


def test_counters_and_stats():
    c = TTLCache(max_entries=2, max_bytes=500, stale_window=10)
    c.put(b"a", 1, ttl=5, now=T0, size=1)
    c.put_negative(b"n", ttl=20, now=T0)
    c.get(b"a", T0)          # hit
    c.get(b"n", T0)          # hit (negative answers are hits)
    c.get(b"x", T0)          # miss
    c.get(b"a", T0 + 5)      # stale hit
    c.get(b"a", T0 + 15)     # past the window: miss, dropped (not an eviction)
    c.put(b"b", 2, ttl=5, now=T0 + 15, size=1)
    c.put(b"c", 3, ttl=5, now=T0 + 15, size=1)  # evicts n
    assert (c.hits, c.misses, c.stale_hits, c.evictions) == (2, 2, 1, 1)
    assert c.stats() == {
        "entries": 2, "bytes_used": 2, "max_entries": 2, "max_bytes": 500,
        "hits": 2, "misses": 2, "stale_hits": 1, "evictions": 1,
    }


@pytest.mark.parametrize(("ttls", "kwargs", "expected"), [
    ([300, 60, 3600], {}, 60),
    ([], {}, 0),
    ([], {"floor": 30}, 30),
    ([5, 100], {"floor": 30}, 30),
    ([10**9], {}, 86400),
    ([10**9, 10**8], {"ceiling": 3600}, 3600),
    ([0, 500], {}, 0),
    ([-10], {}, 0),
    ([120], {"floor": 120, "ceiling": 120}, 120),
    (iter([7, 3, 9]), {}, 3),  # any iterable, consumed once
])
def test_answer_ttl(ttls, kwargs, expected):
    assert answer_ttl(ttls, **kwargs) == expected


def test_answer_ttl_bad_bounds():
    with pytest.raises(ValueError):
        answer_ttl([10], floor=100, ceiling=10)


# -- model-based test ---------------------------------------------------------------------

KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"])
TTLS = st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 10.0])
SIZES = st.integers(min_value=0, max_value=500)  # negatives weigh ~400 B (negative_size)
STEPS = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0])


class CacheMachine(RuleBasedStateMachine):
    """TTLCache against a dict + list-order reference model with the same half-open rules."""

    @initialize(max_entries=st.integers(min_value=1, max_value=4),
                max_bytes=st.none() | st.integers(min_value=0, max_value=1200),
                stale_window=st.sampled_from([0.0, 0.5, 2.0]))
    def setup(self, max_entries, max_bytes, stale_window):
        self.cache = TTLCache(max_entries=max_entries, max_bytes=max_bytes,
                              stale_window=stale_window)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stale_window = stale_window
        self.now = 0.0
        self.model: dict = {}   # key -> (value, expires_at, size, negative)
        self.order: list = []   # LRU first
        self.negatives: list = []  # negative keys in put order (each write sweeps expired ones)
        self.counts = {"hits": 0, "misses": 0, "stale_hits": 0, "evictions": 0}

    def _model_drop(self, key):
        if key in self.model:
            if self.model[key][3]:
                self.negatives.remove(key)
            del self.model[key]
            self.order.remove(key)

    def _model_store(self, key, value, ttl, size, negative):
        while self.negatives and self.now >= self.model[self.negatives[0]][1] + self.stale_window:
            self._model_drop(self.negatives[0])  # expired negatives go (not evictions)
        self._model_drop(key)
        if not ttl > 0 or (self.max_bytes is not None and size > self.max_bytes):
            return False
        self.model[key] = (value, self.now + ttl, size, negative)
        self.order.append(key)
        if negative:
            self.negatives.append(key)
        while len(self.order) > self.max_entries or (
                self.max_bytes is not None
                and sum(self.model[k][2] for k in self.order) > self.max_bytes):
            self._model_drop(self.order[0])
            self.counts["evictions"] += 1
        return True

    @rule(key=KEYS, value=st.integers(), ttl=TTLS, size=SIZES)
    def put(self, key, value, ttl, size):
        expected = self._model_store(key, value, ttl, size, False)
        assert self.cache.put(key, value, ttl=ttl, now=self.now, size=size) == expected

    @rule(key=KEYS, ttl=TTLS)
    def put_negative(self, key, ttl):
        expected = self._model_store(key, None, ttl, negative_size(key), True)
        assert self.cache.put_negative(key, ttl=ttl, now=self.now) == expected

    @rule(key=KEYS)
    def get_rule(self, key):
        self.get(key)

    def get(self, key):
        got = self.cache.get(key, self.now)
        if key not in self.model:
            self.counts["misses"] += 1
            assert got is None
            return
        value, expires_at, _size, negative = self.model[key]
        if self.now < expires_at:
            stale = False
            self.counts["hits"] += 1
        elif self.now < expires_at + self.stale_window:
            stale = True
            self.counts["stale_hits"] += 1
        else:
            self._model_drop(key)
            self.counts["misses"] += 1
            assert got is None
            return
        self.order.remove(key)
        self.order.append(key)
        assert got == Hit(value, negative, stale, expires_at)

    @rule(key=KEYS)
    def invalidate(self, key):
        present = key in self.model
        self._model_drop(key)
        assert self.cache.invalidate(key) == present

    @rule(dt=STEPS)
    def advance(self, dt):
        self.now += dt

    @rule(data=st.data(), edge=st.sampled_from(["expiry", "stale_end"]))
    def get_at_boundary(self, data, edge):
        # Land exactly on a held entry's expiry or the end of its stale window, where the
        # half-open interval rules matter, and look it up; time never goes backwards.
        if not self.model:
            return
        key = data.draw(st.sampled_from(sorted(self.model)))
        expires_at = self.model[key][1]
        target = expires_at if edge == "expiry" else expires_at + self.stale_window
        self.now = max(self.now, target)
        self.get(key)

    @invariant()
    def matches_model(self):
        c = self.cache
        assert list(c._entries) == self.order
        assert len(c) == len(self.model) <= self.max_entries
        assert c.bytes_used == sum(e[2] for e in self.model.values())
        assert c.bytes_used == sum(e.size for e in c._entries.values())
        assert list(c._negatives) == self.negatives
        if self.max_bytes is not None:
            assert c.bytes_used <= self.max_bytes
        assert {k: getattr(c, k) for k in self.counts} == self.counts


CacheMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                          deadline=None)
TestCacheModel = CacheMachine.TestCase
