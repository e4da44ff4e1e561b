"""How a recursive node resolves, as pure steps: answer cache → delegation → ask → cache.

Every rule of resolution lives here, and only here:

* ``locate()`` says where a prefix is served: a fresh cached delegation; for ``0.NA`` the
  top-level node itself (prefix records live there, remembered for ``prefix_record_ttl``);
  otherwise it asks the top-level node (``AskTop``) and caches the site for the TTL given
  (``delegation_ttl`` when none). When the top-level node cannot be reached
  (``PeerUnavailable``), a delegation still within the delegation cache's stale window is
  used. Resolves (through ``steps``) and forwarded writes (``RecursiveNode.locate``) both
  find sites through it: one code path for "where is this prefix served".
* ``steps()`` resolves one handle: a fresh cached answer (or "not found") is returned without
  asking anything (flagged ``refresh`` when the hit fell in the entry's prefetch window: the
  caller refreshes it in the background, once per entry); otherwise it locates the prefix and
  asks that node (``AskNode``), caching the answer for its smallest value TTL clamped to
  ``[min_ttl, max_ttl]``, and "not found" for ``negative_ttl()`` (RFC 2308). An upstream that
  cannot be reached is answered from a stale entry when there is one. ``fresh``
  (``auth=true``) skips the answer cache but refills it.
* serve-stale (RFC 8767): an entry is kept past its TTL for ``answer_stale`` (negative ones
  ``negative_stale``, delegations ``delegation_stale``); it serves when the upstream fails
  (``steps``) or does not answer within ``stale_deadline`` (``on_deadline``, for the caller
  that runs the clock of that deadline: the resolution goes on and refills the cache). What a
  client gets from a stale entry has every value's TTL set to ``stale_answer_ttl``
  (``served``); a fresh answer keeps the serving node's TTLs.

A stale entry also serves at once, without asking, while every peer that could answer is in
its back-off window (``down``, from ``peer_health``), as RFC 8767's failure recheck timer says.

Invariants: the answer cache is probed at most once per resolution (a caller that already
looked, ``RecursiveNode.cached``, passes what it found as ``probe``); only ``PeerUnavailable``
makes a stale entry serve; a failure other than "not found" is never remembered.

``steps`` and ``locate`` are generators: they yield what they need from the network and receive
the reply through ``send`` (or the error through ``throw``). No sockets, no sleeping, the clock
and the limits (``config.CacheConfig``) passed in, so every rule is tested by driving the
generators by hand. ``drive()`` is the thin async loop that runs them against real peers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Generator, TypeVar

import msgpack

from resolver import errors, identifiers
from resolver.cache import Hit, TTLCache, answer_ttl
from resolver.config import CacheConfig
from resolver.records import Answer, decode_rows

__all__ = ["Site", "AskTop", "AskNode", "Outcome", "Caches", "NOT_PROBED", "locate", "steps",
           "drive", "negative_ttl", "on_deadline", "served", "stale_answer"]


@dataclass(frozen=True, slots=True)
class Site:
    """Where a prefix is served: the prefix that delegates, the primary node's HTTP URL and
    RPC address, and its mirrors' ``(http_url, rpc_addr)`` in the order HS_SITE lists them
    (read-only copies: resolves may go there, writes never)."""

    prefix: str
    http_url: str
    rpc_addr: str
    mirrors: tuple[tuple[str, str], ...] = ()

    def wire(self) -> list:
        """As the top-level node's ``delegate`` RPC sends it (``from_wire`` reads it back)."""
        return [self.prefix, self.http_url, self.rpc_addr, [list(m) for m in self.mirrors]]

    @classmethod
    def from_wire(cls, doc: list) -> "Site":
        prefix, http_url, rpc_addr, *rest = doc
        mirrors = tuple((str(h), str(r)) for h, r in rest[0]) if rest else ()
        return cls(str(prefix), str(http_url), str(rpc_addr), mirrors)


@dataclass(frozen=True, slots=True)
class AskTop:
    """Need: the top-level node's delegation for ``prefix``; the reply is ``(Site, ttl)``."""
    prefix: str


@dataclass(frozen=True, slots=True)
class AskNode:
    """Need: ``handle`` resolved by the node at ``site``; the reply is ``(Answer, ttls)``."""
    site: Site
    handle: str


@dataclass(frozen=True, slots=True)
class Outcome:
    data: "Answer | None"       # the record (records.Answer: len() is its size); None: not found
    source: str                 # "cache", "stale", "upstream", "negative"
    error: errors.HandleError | None = None
    refresh: bool = False       # from cache, in its prefetch window: refresh it in the background


@dataclass(slots=True)
class Caches:
    answers: TTLCache           # handle key -> Answer, or a negative entry
    delegations: TTLCache       # prefix key -> Site

    @classmethod
    def from_config(cls, config: CacheConfig) -> "Caches":
        return cls(TTLCache(max_entries=config.answer_entries, max_bytes=config.answer_bytes,
                            stale_window=config.answer_stale,
                            negative_stale=config.negative_stale,
                            prefetch_window=config.prefetch_window),
                   TTLCache(max_entries=config.delegation_entries,
                            stale_window=config.delegation_stale))


class _NotProbed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_PROBED"


NOT_PROBED = _NotProbed()  # ``steps(probe=...)``: the caller did not look into the cache

Need = AskTop | AskNode
Down = Callable[[Site], bool]
R = TypeVar("R")
Locate = Generator[AskTop, object, Site]
Step = Generator[Need, object, Outcome]


def locate(prefix: str, prefix_key: bytes, *, caches: Caches, config: CacheConfig,
           clock: Callable[[], float], top: Site, down: Down | None = None) -> Locate:
    """Where ``prefix`` is served. ``top`` is the top-level node's site (for ``0.NA``, and
    its addresses answer ``AskTop``). ``down(site)``: every peer of ``site`` is known to be
    failing (``peer_health``): a stale delegation is then used without asking."""
    hit = caches.delegations.get(prefix_key, clock())
    if hit is not None and not hit.stale:
        return hit.value
    if prefix.upper() == identifiers.NA_PREFIX:  # prefix records live at the top-level node
        site, ttl = top, config.prefix_record_ttl
    elif hit is not None and down is not None and down(top):
        return hit.value  # RFC 8767's failure recheck: no wait for a top known to be down
    else:
        try:
            site, ttl = yield AskTop(prefix)
        except errors.PeerUnavailable:
            if hit is None:
                raise
            return hit.value  # the top-level node is down: a delegation that just expired
    caches.delegations.put(prefix_key, site, ttl=ttl or config.delegation_ttl, now=clock())
    return site


def steps(handle: str, key: bytes, prefix_key: bytes, prefix: str, *, caches: Caches,
          config: CacheConfig, clock: Callable[[], float], top: Site, fresh: bool = False,
          probe: "Hit | None | _NotProbed" = NOT_PROBED, down: Down | None = None) -> Step:
    """Resolve one handle. ``probe``: what the caller's own look into the answer cache for
    ``key`` found (a Hit, or None for a miss); left out, the steps look themselves.
    ``down(site)``: every peer of ``site`` is known to be failing; a stale entry then serves
    without asking (RFC 8767's failure recheck timer: the peers' back-off window)."""
    if fresh:
        hit = None
    elif probe is NOT_PROBED:
        hit = caches.answers.get(key, clock())
    else:
        hit = probe
    if hit is not None and not hit.stale:
        if hit.negative:
            return Outcome(None, "negative")
        return Outcome(hit.value, "cache", refresh=hit.prefetch)
    try:
        site = yield from locate(prefix, prefix_key, caches=caches, config=config, clock=clock,
                                 top=top, down=down)
        if hit is not None and down is not None and down(site):
            raise errors.PeerUnavailable(f"every node serving {site.prefix} is failing")
        data, ttls = yield AskNode(site, handle)
    except errors.HandleError as exc:
        if exc.code == errors.HANDLE_NOT_FOUND:
            caches.answers.put_negative(key, ttl=negative_ttl(exc, config), now=clock())
            return Outcome(None, "negative", exc)
        if hit is not None and isinstance(exc, errors.PeerUnavailable):
            # the upstream is down: an answer that expired moments ago beats an error
            return Outcome(hit.value, "stale") if not hit.negative else Outcome(None, "negative")
        raise
    ttl = answer_ttl(ttls, floor=config.min_ttl, ceiling=config.max_ttl)
    caches.answers.put(key, data, ttl=ttl, now=clock(), size=len(data))
    return Outcome(data, "upstream")


def negative_ttl(exc: errors.HandleError, config: CacheConfig) -> float:
    """How long "not found" is remembered (RFC 2308 section 5): the negative TTL the serving
    node sent with it (a ``negative_ttl`` attribute of the error, when a node sends one), else
    ``config.negative_ttl``; never more than ``config.max_negative_ttl``."""
    sent = getattr(exc, "negative_ttl", None)
    ttl = config.negative_ttl if sent is None else sent
    return max(0.0, min(float(ttl), config.max_negative_ttl))


def on_deadline(hit: "Hit | None") -> Outcome | None:
    """What a client gets when the upstream has not answered within ``stale_deadline``: the
    stale entry it found, when there is one (the resolution goes on); None: keep waiting."""
    if hit is None or not hit.stale:
        return None
    return Outcome(None, "negative") if hit.negative else Outcome(hit.value, "stale")


def stale_answer(answer: Answer, ttl: int) -> Answer:
    """``answer`` with every value's TTL set to ``ttl`` (RFC 8767's stale answer TTL)."""
    text, rows = decode_rows(answer.data)
    for row in rows:
        row[4] = ttl
    return Answer(msgpack.packb([text, rows], use_bin_type=True))


def served(outcome: Outcome, config: CacheConfig) -> "Answer | None":
    """The record a client gets for ``outcome``: a stale one with ``stale_answer_ttl``."""
    if outcome.source == "stale" and outcome.data is not None:
        return stale_answer(outcome.data, config.stale_answer_ttl)
    return outcome.data


async def drive(gen: Generator[Need, object, R], ask_top: Callable[[str], Awaitable],
                ask_node: Callable[[Site, str], Awaitable], first: Need | None = None) -> R:
    """Run ``steps`` or ``locate`` against real peers: every need is awaited and sent back.

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
