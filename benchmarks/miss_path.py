#!/usr/bin/env python
"""Where a cold request's CPU goes in the recursive node's own code:
``python benchmarks/miss_path.py [--misses 20000] [--rounds 5]``.

In one process, with no socket: a ``RecursiveNode`` (answer cache off, its delegation cached)
whose peer answers every ``call_soon`` from a list this loop drains, 16 calls at a time, and a
stand-in connection that keeps what would be written. It times (``time.process_time``, medians
of interleaved rounds):
- a miss end to end in ``resolver.fast_miss`` (take, the steps, the call, the answer's
  rendering, the bytes written), the reference: the same node's warm hit (``cached_hit`` then
  the bytes ``fast_http`` writes), measured in the same rounds;
- the parts a miss adds, each alone: parsing the handle, ``records.Answer`` from the bytes a
  secondary sends (decode and render), and the HTTP answer's bytes.
What is left of the miss after those is the machinery (steps, future, callbacks, health,
counters). Nothing here is HTTP parsing, msgpack-RPC framing or a syscall:
``cpu_per_request.py --cold`` measures the whole path.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import msgpack
import uvloop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from resolver import identifiers, records  # noqa: E402
from resolver.config import Config  # noqa: E402
from resolver.fast_http import json_answer  # noqa: E402
from resolver.recursive import RecursiveNode  # noqa: E402
from resolver.resolution import Site  # noqa: E402

PREFIX = "88.118.8"
ROWS = [[1, "URL", "string", "https://ex.com/88.118.8/SN000000001", 86400, 1764633600, 14],
        [2, "CHECKSUM", "string", "sha1:2a080f03534dd1d7e1592d100a1234567890abcd", 86400,
         1764633600, 14],
        [100, "HS_ADMIN", "admin", {"handle": "0.NA/88.118.8", "index": 300,
                                    "permissions": "111111111111"}, 86400, 1764633600, 14]]


class Peer:
    """A peer whose answers this loop hands back (``drain``): the record for any handle."""
    connected = True

    def __init__(self) -> None:
        self.calls: list = []
        self.data = msgpack.packb([f"{PREFIX}/SN000000001", ROWS], use_bin_type=True)

    def call_soon(self, method, params, done) -> bool:
        self.calls.append(done)
        return True

    def drain(self) -> None:
        calls, self.calls = self.calls, []
        for done in calls:
            done(None, self.data)


class Conn:
    """What ``fast_miss`` needs of a connection: the bytes it would write are counted."""
    _op = None

    def __init__(self, loop) -> None:
        self._loop, self.answered = loop, 0

    def _begin(self, request: bytes) -> None:
        pass

    def _finish(self, response: bytes) -> None:
        self.answered += 1

    def _fallback(self) -> None:
        raise RuntimeError("a miss fell back to aiohttp")


def node_with(answers: int) -> tuple[RecursiveNode, Peer]:
    node = RecursiveNode("recursive", "127.0.0.1:1",
                         Config().with_values("bench", {"cache": {"answer_entries": answers}}))
    site = Site(PREFIX, "http://127.0.0.1:2", "127.0.0.1:3", ())
    node.caches.delegations.put(identifiers.make_key(PREFIX), site, ttl=1e9, now=node.clock())
    peer = Peer()
    node.peer = lambda addr: peer
    return node, peer


async def misses(n: int) -> float:
    node, peer = node_with(0)
    conn = Conn(asyncio.get_running_loop())
    texts = [f"{PREFIX}/SN{i:09d}" for i in range(n)]
    start = time.process_time()
    for i, text in enumerate(texts):
        node.fast_miss.take(conn, text, b"", 0.0)
        if len(peer.calls) == 16:
            peer.drain()
            await asyncio.sleep(0)  # the futures' callbacks run
    peer.drain()
    for _ in range(3):
        await asyncio.sleep(0)
    spent = time.process_time() - start
    assert conn.answered == n, conn.answered
    return spent / n * 1e6


def hits(n: int) -> float:
    node, peer = node_with(1000)
    text = f"{PREFIX}/SN000000001"
    node.caches.answers.put(identifiers.make_key(text), records.Answer(peer.data), ttl=1e9,
                            now=node.clock())
    start = time.process_time()
    for _ in range(n):
        json_answer(text, node.cached_hit(text))
    return (time.process_time() - start) / n * 1e6


def part(fn, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


async def main(n: int, rounds: int) -> None:
    data = Peer().data
    answer = records.Answer(data)
    text = f"{PREFIX}/SN000000001"
    got: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, us in (("warm hit (reference)", hits(n)), ("miss, end to end", await misses(n)),
                         ("  parse the handle", part(lambda: identifiers.parse(text), n)),
                         ("  Answer from the RPC bytes", part(lambda: records.Answer(data), n)),
                         ("  the HTTP answer's bytes", part(lambda: json_answer(text, answer),
                                                            n))):
            got.setdefault(name, []).append(us)
    med = {k: statistics.median(v) for k, v in got.items()}
    ref = med["warm hit (reference)"]
    print(f"{n:,} misses per round, {rounds} rounds (CPU µs per request, median)")
    print(f"{'':34}{'µs':>8}{'× warm hit':>12}")
    for name, us in med.items():
        print(f"{name:34}{us:>8.2f}{us / ref:>11.1f}×")
    rest = med["miss, end to end"] - sum(v for k, v in med.items() if k.startswith("  "))
    print(f"{'  the rest (steps, future, calls)':34}{rest:>8.2f}{rest / ref:>11.1f}×")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--misses", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    uvloop.run(main(args.misses, args.rounds))
