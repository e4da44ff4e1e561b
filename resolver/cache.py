"""TTL + LRU cache for the recursive resolver node.

The recursive node keeps two kinds of answers, each in its own :class:`TTLCache`:

* **delegations** - prefix -> where that prefix is served (the service site / servers the
  global registry pointed us at), so resolving ``20.500.123/x`` does not ask the root every time;
* **identifier answers** - identifier -> the encoded record bytes an upstream returned, plus
  *negative* entries ("this identifier does not exist") so repeated misses are absorbed too.

Entries live until ``now + ttl``; for ``stale_window`` seconds after that (``negative_stale``
for negative entries) they are still returned, marked ``stale``, so the caller may serve them
while it refreshes in the background or while the upstream is unreachable (serve-stale, RFC
8767: the window is its maximum staleness). With ``prefetch_window`` (a fraction of the TTL),
the first fresh hit of a positive entry within the last part of its TTL comes back marked
``prefetch`` - once per entry, until a ``put`` replaces it - so the caller refreshes it before
it expires (Unbound's ``prefetch``). Capacity is bounded both by
entry count and by bytes (the caller says what an entry weighs, normally ``len(encoded)``);
over either limit the least recently used entries go. Expired entries are dropped lazily - when
a ``get`` finds them, or when LRU pressure reaches them - there is no background sweep, and
every operation is O(1). Negative entries, which a client makes at will by asking for names
that do not exist, are also dropped once past their stale window by every write (``put``,
``put_negative``): they are kept in put order as well, and each write drops up to
``SWEEP`` of them from the oldest end (put order is expiry order when they share one TTL, as
they mostly do; one that expires later only delays the sweep of those behind it). A negative
entry counts what it costs in CPython objects (``negative_size``), not a nominal figure.

The clock is a parameter (``now``, float seconds) of every call that needs it rather than a
``time.time()`` inside: the module stays pure logic, the simulator can drive it from virtual
time, and tests can step time across expiry boundaries exactly without sleeping.

Answers are served from cache with the TTLs the serving node gave (as Handle.Net's proxy
does; a downstream cache may keep them up to one TTL longer than we do), which lets the
recursive node render an answer once and serve the same bytes until it expires.
:func:`answer_ttl` picks the TTL to cache a whole record for.

Not thread-safe; meant for one event loop.
"""
from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Hit", "TTLCache", "answer_ttl", "NEGATIVE_ENTRY_SIZE", "negative_size"]

# Bytes a negative entry costs besides its key, measured with tracemalloc (CPython 3.11,
# 64-bit): the _Entry (72 B), its expiry float (24 B), its slots in the OrderedDict of entries
# and in the one of negatives in put order (~100 B each with the dicts' spare room): 270-330 B
# from 1,000 to 150,000 entries, the most just after the dicts grow; 360 covers that.
# tests/test_hostile_http.py measures it again and holds the figure to it.
NEGATIVE_ENTRY_SIZE = 360
SWEEP = 32  # expired negative entries a write drops at most (amortised O(1) per write)


def negative_size(key: Hashable) -> int:
    """Bytes a negative entry for ``key`` counts against ``max_bytes``: the entry and the key
    object it keeps alive (``sys.getsizeof``: 33 B + its length for bytes)."""
    return NEGATIVE_ENTRY_SIZE + sys.getsizeof(key)


@dataclass(frozen=True, slots=True)
class Hit:
    """What :meth:`TTLCache.get` found.

    ``value`` is None for a negative entry (``negative`` True: the key is known not to exist).
    ``stale`` is True when the entry has expired but is still within the stale window.
    ``prefetch`` is True on the one fresh hit that found the entry in its prefetch window.
    """

    value: Any
    negative: bool
    stale: bool
    expires_at: float
    prefetch: bool = False


# one int object per distinct entry size, shared by the entries of that size (bounded: sizes
# of one kind of record are few): 32 B less per entry than an int of its own (beyond 256)
_SIZES: dict[int, int] = {}


class _Entry:
    __slots__ = ("value", "expires_at", "size", "negative", "prefetch_at")

    def __init__(self, value: Any, expires_at: float, size: int, negative: bool,
                 prefetch_at: float) -> None:
        self.value = value
        self.expires_at = expires_at
        self.size = size
        self.negative = negative
        self.prefetch_at = prefetch_at  # a fresh hit from then on asks for a prefetch; inf: none


class TTLCache:
    """Bounded cache with per-entry expiry, a serve-stale window and LRU eviction.

    Time intervals are half-open: an entry put at ``t`` with ``ttl`` is fresh for
    ``t <= now < t + ttl``, stale for ``t + ttl <= now < t + ttl + stale_window``, and gone
    after that. With ``stale_window == 0`` an entry is gone exactly at its expiry.

    Counters: ``hits`` (fresh, including negative entries), ``stale_hits``, ``misses``
    (absent or past the stale window) and ``evictions`` (entries pushed out by capacity
    pressure; not lazy expiry, invalidation or replacement). ``clear`` keeps the counters.
    ``negative_hits``, ``negative_stale_hits`` and ``negative_evictions`` count the part of
    those that were negative entries; ``negatives`` is how many negative entries are held.
    All are plain integers, read by ``resolver.metrics`` at scrape time.
    """

    __slots__ = (
        "max_entries", "max_bytes", "stale_window", "negative_stale", "prefetch_window",
        "_entries", "_bytes", "_negatives",
        "hits", "misses", "stale_hits", "evictions",
        "negative_hits", "negative_stale_hits", "negative_evictions",  # metrics
    )

    def __init__(self, *, max_entries: int, max_bytes: int | None = None,
                 stale_window: float = 0.0, negative_stale: float | None = None,
                 prefetch_window: float = 0.0) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")
        if negative_stale is None:
            negative_stale = stale_window
        if not stale_window >= 0 or not negative_stale >= 0:
            raise ValueError(f"stale windows must be >= 0, got {stale_window}, {negative_stale}")
        if not 0 <= prefetch_window <= 1:
            raise ValueError(f"prefetch_window must be within [0, 1], got {prefetch_window}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stale_window = float(stale_window)
        self.negative_stale = float(negative_stale)
        self.prefetch_window = float(prefetch_window)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()  # LRU first, MRU last
        self._negatives: OrderedDict[Hashable, _Entry] = OrderedDict()  # negatives, put order
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.stale_hits = 0
        self.evictions = 0
        self.negative_hits = self.negative_stale_hits = self.negative_evictions = 0

    # -- writes ---------------------------------------------------------------------------

    def put(self, key: Hashable, value: Any, *, ttl: float, now: float, size: int = 0) -> bool:
        """Store ``value`` under ``key`` until ``now + ttl``; return whether it was stored.

        ``size`` is what the entry counts against ``max_bytes``. Not stored - and any
        existing entry for ``key`` dropped, since it is superseded - when ``ttl <= 0`` or the
        entry alone would exceed ``max_bytes`` (or ``max_entries`` is 0).
        """
        return self._store(key, value, ttl, now, size, False)

    def put_negative(self, key: Hashable, *, ttl: float, now: float) -> bool:
        """Remember until ``now + ttl`` that ``key`` does not exist; same rules as :meth:`put`."""
        return self._store(key, None, ttl, now, negative_size(key), True)

    def _store(self, key: Hashable, value: Any, ttl: float, now: float, size: int,
               negative: bool) -> bool:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if self._negatives:
            self._sweep(now)
        old = self._entries.pop(key, None)
        if old is not None:
            self._forget(key, old)
        if (not ttl > 0  # also refuses NaN
                or self.max_entries == 0
                or (self.max_bytes is not None and size > self.max_bytes)):
            return False
        prefetch_at = (now + ttl * (1 - self.prefetch_window)
                       if self.prefetch_window and not negative else math.inf)
        size = _SIZES.setdefault(size, size) if len(_SIZES) < 4096 else _SIZES.get(size, size)
        entry = self._entries[key] = _Entry(value, now + ttl, size, negative, prefetch_at)
        if negative:
            self._negatives[key] = entry
        self._bytes += size
        self._evict()
        return True

    @property
    def negatives(self) -> int:
        """Negative entries held now (expired ones too, until swept or evicted)."""
        return len(self._negatives)

    def _forget(self, key: Hashable, entry: _Entry) -> None:
        """Account for ``entry`` having left ``_entries``."""
        self._bytes -= entry.size
        if entry.negative:
            del self._negatives[key]

    def _sweep(self, now: float) -> None:
        """Drop up to ``SWEEP`` negative entries past their stale window, oldest put first."""
        negatives = self._negatives
        for _ in range(SWEEP):
            if not negatives:
                return
            key, entry = next(iter(negatives.items()))
            if now < entry.expires_at + self.negative_stale:
                return
            del self._entries[key]
            self._forget(key, entry)

    def _evict(self) -> None:
        # The newest entry is at the MRU end and fits on its own, so this never reaches it.
        entries = self._entries
        max_bytes = self.max_bytes
        while (len(entries) > self.max_entries
               or (max_bytes is not None and self._bytes > max_bytes)):
            key, victim = entries.popitem(last=False)
            self._forget(key, victim)
            self.evictions += 1
            self.negative_evictions += victim.negative

    def invalidate(self, key: Hashable) -> bool:
        """Drop ``key``; return whether it was present (expired or not)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._forget(key, entry)
        return True

    def clear(self) -> None:
        """Drop every entry; counters are kept."""
        self._entries.clear()
        self._negatives.clear()
        self._bytes = 0

    # -- reads ----------------------------------------------------------------------------

    def get(self, key: Hashable, now: float) -> Hit | None:
        """Look ``key`` up at time ``now``; a hit (fresh or stale) becomes most recently used."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires_at = entry.expires_at
        prefetch = False
        if now < expires_at:
            stale = False
            self.hits += 1
            self.negative_hits += entry.negative
            if now >= entry.prefetch_at:
                entry.prefetch_at = math.inf  # once per entry
                prefetch = True
        elif now < expires_at + (self.negative_stale if entry.negative else self.stale_window):
            stale = True
            self.stale_hits += 1
            self.negative_stale_hits += entry.negative
        else:
            del self._entries[key]
            self._forget(key, entry)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        return Hit(entry.value, entry.negative, stale, expires_at, prefetch)

    def fresh(self, key: Hashable, now: float) -> Hit | None:
        """``get`` for a fresh, positive entry; anything else is None with nothing counted,
        moved or dropped (``RecursiveNode.cached_hit``)."""
        entry = self._entries.get(key)
        if entry is None or entry.negative or now >= entry.expires_at:
            return None
        return self.get(key, now)

    def holds(self, key: Hashable) -> bool:
        """An entry of any kind (fresh, stale, negative) is kept for ``key``; nothing counted."""
        return key in self._entries

    def __len__(self) -> int:
        """Entries held, including expired ones not yet dropped."""
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, int | None]:
        return {
            "entries": len(self._entries),
            "bytes_used": self._bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "stale_hits": self.stale_hits,
            "evictions": self.evictions,
        }

    def __repr__(self) -> str:
        return (f"TTLCache(entries={len(self._entries)}/{self.max_entries}, "
                f"bytes={self._bytes}/{self.max_bytes}, stale_window={self.stale_window})")


def answer_ttl(ttls: Iterable[int], *, floor: int = 0, ceiling: int = 86400) -> int:
    """TTL to cache a record for: its smallest value TTL, clamped to ``[floor, ceiling]``.

    Handle values each carry their own TTL; a record is cached as a unit, so the shortest one
    governs. No values -> ``floor``. TTLs must already be relative seconds (convert a value with
    an absolute ``ttlType`` to ``expiry - now`` first). A result of 0 means "do not cache",
    which :meth:`TTLCache.put` honours.
    """
    if floor > ceiling:
        raise ValueError(f"floor {floor} > ceiling {ceiling}")
    smallest = min(ttls, default=None)
    if smallest is None:
        return floor
    return math.floor(max(floor, min(ceiling, smallest)))
