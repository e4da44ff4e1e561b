"""What a cached answer (``records.Answer``) holds: little, and enough to rebuild the rest.

The recursive node caches one Answer per identifier, up to a million by default, so each byte
counts: it keeps the rendered JSON the warm path sends and a small remainder, and rebuilds the
stored bytes and rows from the two on the rare path. These tests pin the rebuild to be exact
and the memory to stay under 1 KiB per cached demo answer (tracemalloc: no timing).
"""
from __future__ import annotations

import gc
import sys
import tracemalloc

import msgpack
import pytest

from resolver import record_input, records
from resolver.cache import TTLCache
from topology import demo

NOW = 1795402493


def stored(handle: str, values: list[dict]) -> bytes:
    return records.encode(handle, record_input.values_from_json({"values": values}, now=NOW))


SECRET = {"index": 300, "type": "HS_SECKEY", "data": "hunter2", "permissions": "1100"}
URL = {"index": 1, "type": "URL", "data": "https://ex.com/a"}


@pytest.mark.parametrize("values", [
    demo.demo_values("88.118.8", 7),
    [URL, SECRET],                                             # a value without public read
    [SECRET, URL, {"index": 2, "type": "EMAIL", "data": "a@b.c", "ttl": 60,
                   "permissions": "1111"}],                    # mixed permissions and TTLs
    [{"index": 5, "type": "DESC", "data": {"format": "hex", "value": "00ff"}},
     {"index": 6, "type": "HS_VLIST", "data": {"format": "vlist", "value": [
         {"handle": "88.118.8/X", "index": 1}]}}],
    [],
], ids=["demo", "secret", "mixed", "formats", "empty"])
def test_an_answer_rebuilds_the_stored_bytes_and_rows_exactly(values):
    data = stored("88.118.8/Mixed-Case", values)
    ans = records.Answer(data)
    assert ans.data is data  # not yet in a cache: the bytes given, at no cost
    size = len(ans)          # what a cache charges, as it puts the answer: now compact
    assert ans.data == data and ans.data is not data
    assert len(ans) == size
    assert ans.rows == records.decode_rows(data)[1]
    assert ans.public_json == records.Answer(ans.data).public_json
    public = [r for r in records.decode_rows(data)[1] if r[6] & records.PUBLIC_READ]
    assert msgpack.unpackb(data)[0] == "88.118.8/Mixed-Case"
    assert len(records.rest_values(ans.rows)) == len(public)


def test_answers_with_the_same_ttls_share_one_tuple():
    a, b = (records.Answer(stored(f"88.118.8/{i}", demo.demo_values("88.118.8", i)))
            for i in range(2))
    assert a.ttls == (86400, 86400, 86400) and a.ttls is b.ttls


def test_a_cached_answer_costs_under_one_kib():
    """20,000 demo answers made from bytes as they arrive over RPC (allocated while traced),
    in a TTLCache under their keys: everything they hold, keys included, ≤ 1 KiB each, and the
    cache's own count (``len(answer)``) is within 20 % of it. Held 1,250 B each when the
    answer kept the stored bytes beside the JSON."""
    n = 20_000
    items = demo.demo_batch("88.118.8", 0, n)
    rows = [record_input.values_from_json(d, now=NOW) for _, d in items]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = TTLCache(max_entries=10**6, max_bytes=2**30)
        for (h, _), values in zip(items, rows):
            ans = records.Answer(records.encode(h, values))  # the bytes an RPC would bring
            cache.put(h.upper().encode(), ans, ttl=86400, now=0, size=len(ans))
        del ans
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"cached demo answer: {held / n:.0f} B held, {cache.bytes_used / n:.0f} B counted")
    assert held / n <= 1024
    assert 0.8 * held <= cache.bytes_used <= 1.2 * held
