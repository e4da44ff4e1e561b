"""The recursive node: the clients' entry point, the I/O around ``resolution``'s rules.

It resolves any identifier by asking the top-level node where its prefix is served, then that
node; answers, delegations and "not found" are cached as ``resolution`` says. Identical
questions in flight share one upstream call (``_inflight``); the upstream work runs as its own
task, so a caller that goes away cancels only its own wait. Writes sent here are passed on
over HTTP to the node that serves the handle (``forward``), located by the same rules, and
always to its primary.

Resilience (issue 11; the rules are ``resolution``'s and ``peer_health``'s, this is the I/O):
* failover: a resolve asks the prefix's primary node, then its mirrors (``Site.mirrors``); a
  delegation or a prefix record (``0.NA/...``) the top-level node, then ``standby_tops``;
  each by health (``peer_health.PeerHealth``: a peer that keeps failing is skipped for a
  back-off window, then probed). An answer from another peer than the first counts as a
  failover (``stats["failover_node"]``, ``["failover_top"]``);
* serve-stale: a request that found a stale entry waits ``cache.stale_deadline`` at most for
  the shared resolution (``asyncio.wait_for`` on a shield: the resolution goes on and refills
  the cache), then is served the stale entry; ``stats["stale"]`` counts stale answers served,
  ``stats["stale_deadline"]`` those of them served on the deadline (the rest: on a failure);
* failure recheck: while every peer that could answer is in back-off, a stale entry serves at
  once, without a call (``resolution.steps``' ``down``, answered by ``_down``);
* prefetch: a fresh hit in an entry's prefetch window starts a background resolution of that
  handle (``stats["prefetches"]``), unless one is in flight already (it is shared as any).
With ``links`` (the WAN model, ``resolver.link``) every RPC call and every write passed on
pays the modelled delays of the link to that node; without, nothing is added.

What it gets over RPC is what an anonymous GET at the serving node shows (no hidden value, no
HS_SECKEY: ``records.public_record``), so that is all it caches and serves; it checks no
credentials (hidden values are read at the serving node's own HTTP port).

Invariants:
* every limit, window and timeout comes from the ``Config`` given (``config.cache``,
  ``config.rpc``, ``config.http.forward_timeout``); time only from the ``clock`` given;
* every RPC client is made by ``_client``;
* a request probes the answer cache once: ``cached`` (the warm path: one key, one dict
  lookup, no parsing) hands what it found on a miss to the ``resolve`` that follows it in the
  same synchronous step (``web.get_handle``: cached -> parse -> resolve, no await between);
  ``resolve`` takes it only for the same key, and every ``resolve`` clears it. A text with the
  ``hdl:`` scheme keys differently from its handle, so it is probed again by ``resolve``.
"""
from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from functools import partial
from typing import Callable, Sequence

import aiohttp
from multidict import CIMultiDict

from resolver import errors, identifiers, records, resolution
from resolver.cache import Hit
from resolver.clock import SYSTEM, Clock
from resolver.config import Config
from resolver.identifiers import Handle
from resolver.link import Link
from resolver.metrics import UpstreamStats
from resolver.net import client_session, split_address
from resolver.peer_health import PeerHealth
from resolver.resolution import Caches, Outcome, Site, drive, steps
from resolver.roles import Role
from resolver.rpc import RpcClient
from resolver.rpc_auth import Method, Trust, text_param
from resolver.fast_miss import FastMiss, Flight, answered, delegation


class RecursiveNode:
    role = Role.RECURSIVE

    def __init__(self, name: str, top_rpc: str, config: Config | None = None, *,
                 case_sensitive: bool = False, clock: Clock = SYSTEM,
                 client_ssl: ssl.SSLContext | None = None,
                 trust: Trust | None = None,
                 links: Callable[[str], Link | None] | None = None,
                 standby_tops: Sequence[str] = ()) -> None:
        self.name = name
        self.links = links  # RPC address -> the WAN link to that node (resolver.link), or None
        self.client_ssl = client_ssl  # verifies https:// nodes writes pass to (cluster CA)
        self.config = config or Config()
        self.case_sensitive = case_sensitive
        self.clock = clock
        self.trust = trust  # how its RPC clients prove they are this node (rpc_auth)
        self.caches = Caches.from_config(self.config.cache)
        self.top_rpc = top_rpc
        self.tops = (top_rpc, *standby_tops)  # asked in turn for delegations (failover)
        # serves 0.NA/ records: the top-level node, then its standbys (read-only copies)
        self.top_site = Site(identifiers.NA_PREFIX, "", top_rpc,
                             tuple(("", addr) for addr in standby_tops))
        self.health = PeerHealth(self.config.cache, clock)
        # calls to peers, per (peer, method), for the metrics (resolver.metrics)
        self.upstream = UpstreamStats(self.config.metrics.max_upstream_series)
        self.top = self._client(top_rpc, "top")
        self._peers: dict[str, RpcClient] = {}
        self._inflight: dict[bytes, asyncio.Future | Flight] = {}  # resolutions in flight
        self._probe: tuple[bytes, Hit | None] | None = None  # cached() -> resolve(), see above
        self._http: aiohttp.ClientSession | None = None  # for writes passed on (forward)
        self.fast_miss = FastMiss(self)  # a miss answered without a task (resolver.fast_http)
        self.stats: Counter[str] = Counter()
        self.since = records.iso_timestamp(int(clock()))  # the counters in stats count from here

    def parse(self, text: str) -> Handle:
        return identifiers.parse(text, case_sensitive=self.case_sensitive)

    def authenticate(self, identity, secret):
        raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                 "a recursive node checks no credentials: send authenticated "
                                 "requests to the node that serves the prefix")

    # ------------------------------------------------------------------ upstream
    def _client(self, addr: str, peer: str | None = None) -> RpcClient:
        """An RPC client to ``addr`` with the config's limits, the node's clock and its RPC
        identity (every client of this node is made here), its calls counted as to ``peer``
        ("top"; else the address, from the topology: a bounded label, unlike the prefix a
        site is found for)."""
        client = RpcClient(*split_address(addr), self.config.rpc, clock=self.clock,
                           trust=self.trust)
        if self.config.metrics.enabled:
            client.observer = self.upstream.observer(peer or addr)
        if self.links is not None:
            client.link = self.links(addr)
        return client

    async def _ask_top(self, prefix: str, tried: Sequence[str] = ()) -> tuple[Site, int]:
        self.stats["delegation_calls"] += not tried
        return delegation(await self._in_turn(self.tops, "delegate", prefix, "top", tried))

    async def _ask_node(self, site: Site, handle: str,
                        tried: Sequence[str] = ()) -> tuple[records.Answer, tuple[int, ...]]:
        self.stats["upstream_calls"] += not tried
        addrs, kind = self.peers_of(site)
        return answered(await self._in_turn(addrs, "resolve", handle, kind, tried))

    def peers_of(self, site: Site) -> tuple[tuple[str, ...], str]:
        """The RPC addresses that serve ``site`` (primary first) and their kind for the stats."""
        return ((site.rpc_addr, *(rpc for _, rpc in site.mirrors)),
                "top" if site is self.top_site else "node")

    def peer(self, addr: str) -> RpcClient:
        """The RPC client of the peer at ``addr`` (made once, by ``_client``)."""
        peer = self.top if addr == self.top_rpc else self._peers.get(addr)
        if peer is None:
            peer = self._peers[addr] = self._client(addr)
        return peer

    async def _call_peer(self, addr: str, method: str, arg: str):
        """One RPC call to the peer at ``addr``."""
        return await self.peer(addr).call(method, arg)

    async def _in_turn(self, addrs: Sequence[str], method: str, arg: str, kind: str,
                       tried: Sequence[str] = ()):
        """The first answer of the peers ``addrs``, asked in turn as ``peer_health`` chooses;
        an error a peer answers (e.g. "not found") is its answer. The last ``PeerUnavailable``
        when none answers. ``tried``: peers that failed already (``resolver.fast_miss``)."""
        tried = list(tried)
        last: errors.PeerUnavailable | None = None
        while (addr := self.health.next(addrs, tried)) is not None:
            tried.append(addr)
            try:
                reply = await self._call_peer(addr, method, arg)
            except errors.PeerUnavailable as exc:
                self.health.failed(addr)
                last = exc
                continue
            except errors.HandleError:
                self.answered_by(addr, addrs, kind)
                raise
            except BaseException:
                self.health.release(addr)
                raise
            self.answered_by(addr, addrs, kind)
            return reply
        raise last or errors.PeerUnavailable(f"no peer to ask among {', '.join(addrs)}")

    def answered_by(self, addr: str, addrs: Sequence[str], kind: str) -> None:
        self.health.ok(addr)
        if addr != addrs[0]:
            self.stats[f"failover_{kind}"] += 1

    async def locate(self, prefix: str) -> Site:
        """Where a prefix is served, by the rules every resolve uses (``resolution.locate``):
        the delegation cache, else the top-level node, else a stale delegation."""
        gen = resolution.locate(prefix, identifiers.make_key(prefix, self.case_sensitive),
                                caches=self.caches, config=self.config.cache, clock=self.clock,
                                top=self.top_site, down=self._down)
        return await drive(gen, self._ask_top, self._ask_node)

    async def forward(self, method: str, handle: Handle, target: str, body: bytes | None,
                      headers: dict[str, str]) -> tuple[int, bytes, CIMultiDict]:
        """A write sent to this node, passed over HTTP to the node serving the handle, with
        the client's credentials as they came (that node checks them). The cached answer for
        the handle is dropped, so the next resolve here sees the write."""
        if handle.is_prefix_handle:
            raise errors.HandleError(errors.SERVER_NOT_RESP, "prefix records are written at "
                                     "the top-level node, not through a recursive node",
                                     handle=handle.text)
        site = await self.locate(handle.prefix)
        if self._http is None:
            self._http = client_session(ssl_context=self.client_ssl, timeout=aiohttp
                                        .ClientTimeout(total=self.config.http.forward_timeout))
        self.caches.answers.invalidate(handle.key)
        start, failed = self.clock(), True
        link = self.links(site.rpc_addr) if self.links is not None else None
        try:
            if link is not None:  # the WAN delays of the request and of its answer
                deadline = start + self.config.http.forward_timeout
                await link.before_send(len(body or b"") + len(target), deadline)
            async with self._http.request(method, site.http_url + target, data=body,
                                          headers=headers, allow_redirects=False) as resp:
                payload = await resp.read()
                passed = CIMultiDict((k, v) for k, v in resp.headers.items()
                                     if k in ("Content-Type", "WWW-Authenticate", "Allow"))
                status = resp.status
            if link is not None:
                await link.before_deliver(len(payload), deadline)
            failed = False
        except errors.PeerUnavailable as exc:  # the link: partitioned, lost or too slow
            raise exc.with_handle(handle.text) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise errors.PeerUnavailable(f"node {site.http_url} did not take the write: "
                                         f"{type(exc).__name__}", handle=handle.text) from None
        finally:
            self.caches.answers.invalidate(handle.key)
            self.upstream.record(site.rpc_addr, f"http_{method.lower()}",
                                 self.clock() - start, failed)  # the peer as its RPC calls
        return status, payload, passed

    # ------------------------------------------------------------------ resolving
    def cached(self, text: str) -> records.Answer | None:
        """A fresh cached answer for this handle text, or None (then ``resolve`` it).

        The warm path: one key and one dict lookup, no parsing. Only handles that parsed
        went into the cache, so a text whose key is found is a valid handle; anything else
        (``hdl:``, a bad handle, a miss, a stale or negative entry) takes the full path, and
        what this probe found goes to the ``resolve`` that follows (see the module's doc).
        """
        key = identifiers.make_key(text, self.case_sensitive)
        hit = self.caches.answers.get(key, self.clock())
        if hit is None or hit.stale or hit.negative:
            self._probe = (key, hit)
            return None
        return self._served_hit(text, hit)

    def cached_hit(self, text: str) -> records.Answer | None:
        """``cached`` for a caller that hands a miss to ``cached`` again (``resolver.fast_http``):
        a fresh hit is served and counted as there; anything else is None with nothing counted,
        moved, stashed for ``resolve`` or taken from the entry (its prefetch)."""
        hit = self.caches.answers.fresh(identifiers.make_key(text, self.case_sensitive),
                                        self.clock())
        return None if hit is None else self._served_hit(text, hit)

    def _served_hit(self, text: str, hit: Hit) -> records.Answer:
        """A fresh hit served: counted, and its prefetch started when it asks for one."""
        self.stats["resolutions"] += 1
        self.stats["cache"] += 1
        if hit.prefetch:
            self._prefetch(text)
        return hit.value

    async def resolve(self, handle: Handle, *, fresh: bool = False) -> records.Answer:
        """The record, from cache or upstream; HandleError 100 / 503 otherwise."""
        self.stats["resolutions"] += 1
        probe, self._probe = self._probe, None
        if fresh:
            hit = None
        elif probe is not None and probe[0] == handle.key:
            hit = probe[1]
        else:
            hit = self.caches.answers.get(handle.key, self.clock())
        gen = self.steps_of(handle, fresh, hit)
        try:
            need = next(gen)
        except StopIteration as done:  # answered from cache: no future, no task
            if done.value.refresh:
                self._prefetch(handle.text)
            return self.result(done.value, handle.text)
        waiting = None if fresh else self._inflight.get(handle.key)
        if waiting is not None:
            if type(waiting) is Flight:  # a fast miss began it (resolver.fast_miss)
                waiting = waiting.future()
            gen.close()
            self.stats["coalesced"] += 1
            return self.result(await self._wait(waiting, hit, handle), handle.text)
        task = self._start(handle.key, gen, need, shared=not fresh)
        return self.result(await self._wait(task, hit, handle), handle.text)

    def steps_of(self, handle: Handle, fresh: bool, hit: Hit | None):
        prefix = handle.prefix
        return steps(handle.text, handle.key, identifiers.make_key(prefix, self.case_sensitive),
                     prefix, caches=self.caches, config=self.config.cache, clock=self.clock,
                     top=self.top_site, fresh=fresh, probe=hit, down=self._down)

    def _down(self, site: Site) -> bool:
        """Every peer that serves ``site`` is in its back-off window (``peer_health``)."""
        return (self.health.in_backoff(site.rpc_addr)
                and all(self.health.in_backoff(rpc) for _, rpc in site.mirrors))

    def _start(self, key: bytes, gen, need, *, shared: bool) -> asyncio.Future:
        """The upstream work runs as its own task: a caller that goes away (client
        disconnect) or stops waiting (the stale deadline) cancels only its own wait, never
        the answer others wait for or the refill of the cache."""
        task = asyncio.ensure_future(drive(gen, self._ask_top, self._ask_node, first=need))
        if shared:
            self._inflight[key] = task
            task.add_done_callback(partial(self.landed, key))
        return task

    async def _wait(self, task: asyncio.Future, hit: Hit | None, handle: Handle) -> Outcome:
        """The outcome of ``task``; with a stale ``hit``, that entry once the upstream has
        not answered within ``cache.stale_deadline`` (RFC 8767's client response timer)."""
        try:
            if hit is None or not hit.stale:
                return await asyncio.shield(task)
            try:
                return await asyncio.wait_for(asyncio.shield(task),
                                              self.config.cache.stale_deadline)
            except TimeoutError:
                if task.done():  # the task's own error, not the deadline
                    raise
                outcome = resolution.on_deadline(hit)
                self.stats["stale_deadline"] += outcome.source == "stale"
                return outcome
        except errors.HandleError as exc:
            raise exc.with_handle(handle.text)

    def _prefetch(self, text: str) -> None:
        """Refresh the answer for the handle ``text`` in the background (Unbound's
        prefetch), unless a resolution of it is in flight already."""
        try:
            handle = self.parse(text)  # it parsed before it was cached
            if handle.key in self._inflight:
                return
            gen = self.steps_of(handle, False, None)
            need = next(gen)
        except (StopIteration, errors.HandleError):  # nothing to ask: nothing to refresh
            return
        self.stats["prefetches"] += 1
        self._start(handle.key, gen, need, shared=True)

    def landed(self, key: bytes, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter re-raises it itself

    def result(self, outcome: Outcome, text: str) -> records.Answer:
        """What a client asking for the handle ``text`` gets from ``outcome`` (counted):
        the record, or HandleError 100."""
        self.stats[outcome.source] += 1
        if outcome.data is None:
            message = outcome.error.message if outcome.error else "Handle not found"
            raise errors.HandleError(errors.HANDLE_NOT_FOUND, message, handle=text)
        return resolution.served(outcome, self.config.cache)

    def report_stats(self) -> dict:
        a = self.caches.answers
        return {"role": self.role, "resolutions": self.stats["resolutions"],
                "cacheEntries": len(a), "cacheBytes": a.bytes_used,
                "cacheHits": self.stats["cache"], "upstreamCalls": self.stats["upstream_calls"],
                "coalesced": self.stats["coalesced"], "stale": self.stats["stale"],
                "since": self.since}

    def rpc_handlers(self) -> dict:
        """RPC methods and who may call them. What this node holds came through RPC, so it
        is public already (``records.public_record``): any node of the cluster may resolve."""
        async def resolve(caller, text) -> bytes:
            return (await self.resolve(self.parse(text_param(text, "handle")))).data
        return {"resolve": Method(resolve, list(Role)),
                "stats": Method(lambda caller: self.report_stats(), [Role.TOP])}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.top.close()
        for peer in self._peers.values():
            await peer.close()

