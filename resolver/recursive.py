"""The recursive node: the clients' entry point. It resolves any identifier by asking the
top-level node where its prefix is served (cached by TTL), then that node (the answer cached
by its smallest value TTL); "not found" is cached briefly; identical questions in flight share
one upstream call. The rules are in ``resolution``; this is the I/O around them. Writes sent
here are passed on over HTTP to the node that serves the handle (``forward``).
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from functools import partial
from typing import Callable

import aiohttp
from multidict import CIMultiDict

from resolver import errors, identifiers, records
from resolver.cache import TTLCache
from resolver.config import RpcConfig
from resolver.identifiers import Handle
from resolver.resolution import Caches, Outcome, Policy, Site, drive, steps
from resolver.rpc import RpcClient


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class RecursiveNode:
    role = "recursive"

    def __init__(self, name: str, top_rpc: str, *, max_entries: int = 1_000_000,
                 max_bytes: int = 512 * 2**20, policy: Policy | None = None,
                 timeout: float = 2.0, case_sensitive: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.case_sensitive = case_sensitive
        self.clock = clock
        self.policy = policy or Policy()
        self.caches = Caches(TTLCache(max_entries=max_entries, max_bytes=max_bytes, stale_window=60),
                             TTLCache(max_entries=100_000, stale_window=3600))
        self.timeout = timeout
        self.top_rpc = top_rpc
        self.top = RpcClient(*_split(top_rpc), RpcConfig(timeout=timeout))
        self._peers: dict[str, RpcClient] = {}
        self._inflight: dict[bytes, asyncio.Future] = {}
        self._http: aiohttp.ClientSession | None = None  # for writes passed on (forward)
        self.stats: Counter[str] = Counter()

    def parse(self, text: str) -> Handle:
        return identifiers.parse(text, case_sensitive=self.case_sensitive)

    def authenticate(self, identity, secret):
        raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                 "a recursive node checks no credentials: send authenticated "
                                 "requests to the node that serves the prefix")

    # ------------------------------------------------------------------ upstream
    async def _ask_top(self, prefix: str) -> tuple[Site, int]:
        if prefix.upper() == identifiers.NA_PREFIX:  # prefix records live at the top-level node
            return Site(identifiers.NA_PREFIX, "", self.top_rpc), 86400
        self.stats["delegation_calls"] += 1
        site, ttl = await self.top.call("delegate", prefix)
        return Site(*site), ttl

    async def _ask_node(self, site: Site, handle: str) -> tuple[records.Answer, list[int]]:
        peer = self._peers.get(site.rpc_addr)
        if peer is None:
            peer = self._peers[site.rpc_addr] = RpcClient(*_split(site.rpc_addr),
                                                          RpcConfig(timeout=self.timeout))
        self.stats["upstream_calls"] += 1
        answer = records.Answer(await peer.call("resolve", handle))
        return answer, answer.ttls

    async def site_of(self, prefix: str) -> Site:
        """Where a prefix is served: the delegation cache, else the top-level node."""
        key = identifiers.make_key(prefix, self.case_sensitive)
        hit = self.caches.delegations.get(key, self.clock())
        if hit is not None and not hit.stale:
            return hit.value
        site, ttl = await self._ask_top(prefix)
        self.caches.delegations.put(key, site, ttl=ttl or self.policy.delegation_ttl,
                                    now=self.clock())
        return site

    async def forward(self, method: str, handle: Handle, target: str, body: bytes | None,
                      headers: dict[str, str]) -> tuple[int, bytes, CIMultiDict]:
        """A write sent to this node, passed over HTTP to the node serving the handle, with
        the client's credentials as they came (that node checks them). The cached answer for
        the handle is dropped, so the next resolve here sees the write."""
        if handle.is_prefix_handle:
            raise errors.HandleError(errors.SERVER_NOT_RESP, "prefix records are written at "
                                     "the top-level node, not through a recursive node",
                                     handle=handle.text)
        site = await self.site_of(handle.prefix)
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.caches.answers.invalidate(handle.key)
        try:
            async with self._http.request(method, site.http_url + target, data=body,
                                          headers=headers, allow_redirects=False) as resp:
                payload = await resp.read()
                passed = CIMultiDict((k, v) for k, v in resp.headers.items()
                                     if k in ("Content-Type", "WWW-Authenticate", "Allow"))
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise errors.PeerUnavailable(f"node {site.http_url} did not take the write: "
                                         f"{type(exc).__name__}", handle=handle.text) from None
        finally:
            self.caches.answers.invalidate(handle.key)
        return status, payload, passed

    # ------------------------------------------------------------------ resolving
    def cached(self, text: str) -> records.Answer | None:
        """A fresh cached answer for this handle text, or None (then ``resolve`` it).

        The warm path: one key and one dict lookup, no parsing. Only handles that parsed
        went into the cache, so a text whose key is found is a valid handle; anything else
        (``hdl:``, a bad handle, a miss, a stale or negative entry) takes the full path.
        """
        hit = self.caches.answers.get(identifiers.make_key(text, self.case_sensitive),
                                      self.clock())
        if hit is None or hit.stale or hit.negative:
            return None
        self.stats["resolutions"] += 1
        self.stats["cache"] += 1
        return hit.value

    async def resolve(self, handle: Handle, *, fresh: bool = False) -> records.Answer:
        """The record, from cache or upstream; HandleError 100 / 503 otherwise."""
        self.stats["resolutions"] += 1
        prefix = handle.prefix
        gen = steps(handle.text, handle.key, identifiers.make_key(prefix, self.case_sensitive),
                    prefix, caches=self.caches, policy=self.policy, clock=self.clock, fresh=fresh)
        try:
            need = next(gen)
        except StopIteration as done:  # answered from cache: no future, no task
            return self._result(done.value, handle)
        waiting = None if fresh else self._inflight.get(handle.key)
        if waiting is not None:
            gen.close()
            self.stats["coalesced"] += 1
            return self._result(await asyncio.shield(waiting), handle)
        # The upstream work runs as its own task: a caller that goes away (client disconnect)
        # cancels only its own wait, never the answer others are waiting for.
        task = asyncio.ensure_future(drive(gen, self._ask_top, self._ask_node, first=need))
        if not fresh:
            self._inflight[handle.key] = task
            task.add_done_callback(partial(self._landed, handle.key))
        try:
            outcome = await asyncio.shield(task)
        except errors.HandleError as exc:
            raise exc.with_handle(handle.text)
        return self._result(outcome, handle)

    def _landed(self, key: bytes, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter re-raises it itself

    def _result(self, outcome: Outcome, handle: Handle) -> records.Answer:
        self.stats[outcome.source] += 1
        if outcome.data is None:
            message = outcome.error.message if outcome.error else "Handle not found"
            raise errors.HandleError(errors.HANDLE_NOT_FOUND, message, handle=handle.text)
        return outcome.data

    def report_stats(self) -> dict:
        a = self.caches.answers
        return {"role": self.role, "resolutions": self.stats["resolutions"],
                "cacheEntries": len(a), "cacheBytes": a.bytes_used,
                "cacheHits": self.stats["cache"], "upstreamCalls": self.stats["upstream_calls"],
                "coalesced": self.stats["coalesced"], "stale": self.stats["stale"]}

    def rpc_handlers(self) -> dict:
        async def resolve(text: str) -> bytes:
            return (await self.resolve(self.parse(text))).data
        return {"resolve": resolve, "stats": self.report_stats}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.top.close()
        for peer in self._peers.values():
            await peer.close()

