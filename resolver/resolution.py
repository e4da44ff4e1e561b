"""How a recursive node resolves, as pure steps: cache → delegation → ask → cache.

``steps()`` is a generator: it yields what it needs from the network (``AskTop`` for a
delegation, ``AskNode`` for an answer) and receives the reply through ``send`` (or the error
through ``throw``); it returns an ``Outcome``. No sockets, no sleeping, the clock passed in,
so every rule here is tested by driving the generator by hand. ``drive()`` is the thin async
loop that runs it against real peers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Generator

from resolver import errors
from resolver.cache import TTLCache, answer_ttl
from resolver.records import Answer


@dataclass(frozen=True, slots=True)
class Site:
    """Where a prefix is served: the prefix that delegates, the node's HTTP URL and RPC address."""

    prefix: str
    http_url: str
    rpc_addr: str


@dataclass(frozen=True, slots=True)
class AskTop:
    prefix: str


@dataclass(frozen=True, slots=True)
class AskNode:
    site: Site
    handle: str


@dataclass(frozen=True, slots=True)
class Outcome:
    data: "Answer | None"       # the record (records.Answer: len() is its size); None: not found
    source: str                 # "cache", "stale", "upstream", "negative"
    error: errors.HandleError | None = None


@dataclass(slots=True)
class Policy:
    negative_ttl: float = 5.0        # how long "not found" is remembered
    delegation_ttl: float = 3600.0   # when the top-level node gives none
    min_ttl: int = 0                 # clamp of the smallest value TTL
    max_ttl: int = 86400


@dataclass(slots=True)
class Caches:
    answers: TTLCache
    delegations: TTLCache


Step = Generator["AskTop | AskNode", object, Outcome]


def steps(handle: str, key: bytes, prefix_key: bytes, prefix: str, *, caches: Caches,
          policy: Policy, clock: Callable[[], float], fresh: bool = False) -> Step:
    """Resolve one handle. ``fresh`` (``auth=true``) skips the answer cache but refills it."""
    hit = None if fresh else caches.answers.get(key, clock())
    if hit is not None and not hit.stale:
        return Outcome(None, "negative") if hit.negative else Outcome(hit.value, "cache")
    try:
        site_hit = caches.delegations.get(prefix_key, clock())
        if site_hit is not None and not site_hit.stale:
            site = site_hit.value
        else:
            site, ttl = yield AskTop(prefix)
            caches.delegations.put(prefix_key, site, ttl=ttl or policy.delegation_ttl, now=clock())
        data, ttls = yield AskNode(site, handle)
    except errors.HandleError as exc:
        if exc.code == errors.HANDLE_NOT_FOUND:
            caches.answers.put_negative(key, ttl=policy.negative_ttl, now=clock())
            return Outcome(None, "negative", exc)
        if hit is not None and isinstance(exc, errors.PeerUnavailable):
            # the upstream is down: an answer that expired moments ago beats an error
            return Outcome(hit.value, "stale") if not hit.negative else Outcome(None, "negative")
        raise
    ttl = answer_ttl(ttls, floor=policy.min_ttl, ceiling=policy.max_ttl)
    caches.answers.put(key, data, ttl=ttl, now=clock(), size=len(data))
    return Outcome(data, "upstream")


async def drive(gen: Step, ask_top: Callable[[str], Awaitable],
                ask_node: Callable[[Site, str], Awaitable], first=None) -> Outcome:
    """Run ``steps`` against real peers: every yielded need is awaited and sent back.

    ``first`` is the need the generator already yielded, when the caller took the first step.
    """
    try:
        need = first if first is not None else next(gen)
        while True:
            try:
                if isinstance(need, AskTop):
                    reply = await ask_top(need.prefix)
                else:
                    reply = await ask_node(need.site, need.handle)
            except errors.HandleError as exc:
                need = gen.throw(exc)
            else:
                need = gen.send(reply)
    except StopIteration as done:
        return done.value
