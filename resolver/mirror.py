"""A mirror: a read-only copy of a secondary node (or the standby top-level node), following
its primary's transaction log (``resolver.replication``), like Handle.Net's mirror servers.

``MirrorNode(name, node, primary_rpc, primary_http, config, *, clock, trust)`` wraps ``node``
(a ``SecondaryNode`` or ``TopNode`` built on the mirror's own store, homing the primary's
prefixes). It reads as ``node`` does (every attribute it does not define is ``node``'s);
its role is ``Role.MIRROR`` and its name ``<primary>~<city>``.

Writes: a mirror never accepts one. Every write, over HTTP (PUT/DELETE of a handle, batch
registration, prefix allocation: ``refuse_write``, routed by ``resolver.web.NodeAPI``) or by
a method (``put``, ``delete``, ``register_many``, ``create_prefix``, ``add_node``,
``register_prefixes``, ``bootstrap``), is refused with HTTP 403, Handle responseCode 301
(SERVER_NOT_RESP: "this server is not the one for that"), a message naming the primary's
HTTP URL and a ``primary`` field holding it, so a client can retry there. This is why no
acknowledged write is lost when a primary comes back: every acknowledged write was
committed durably at the primary, and nothing else ever writes a mirror's records.

Following: ``await start()`` runs ``Follower`` against the primary in the background: dump,
then long-poll the log; each answer is applied to the mirror's own store with its position in
one durable transaction (``store.apply``), then the wrapped node's memos of those keys are
dropped. A failed call waits ``replication.retry`` seconds and asks again. ``lag_seconds()``
is ``Follower.lag`` now (``idsim_replication_lag_seconds{node}`` in ``resolver.metrics``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Callable

from resolver import errors
from resolver.clock import SYSTEM, Clock
from resolver.config import Config
from resolver.net import split_address
from resolver.replication import DumpPage, Follower
from resolver.roles import Role
from resolver.rpc_client import RpcClient
from resolver.rpc_auth import Trust

log = logging.getLogger("idsim.mirror")

READ_METHODS = ("resolve", "delegate")  # what a mirror serves over RPC of its node's methods
REFUSED_STATUS = 403  # HTTP status of a refused write (responseCode SERVER_NOT_RESP, 301)


class WriteRefused(errors.HandleError):
    """A write sent to a mirror: Handle-shaped, with the primary's HTTP URL in ``primary``."""

    def __init__(self, mirror: str, primary_http: str, handle: str | None = None) -> None:
        super().__init__(errors.SERVER_NOT_RESP, f"{mirror} is a read-only mirror; send writes "
                         f"to its primary at {primary_http}", handle=handle,
                         status=REFUSED_STATUS)
        self.primary = primary_http

    def body(self) -> dict:
        return dict(super().body(), primary=self.primary)


async def refuse_write(node, request) -> None:
    """The HTTP handler of every write route of a mirror (``resolver.web.NodeAPI``)."""
    raise node.refusal()


class MirrorNode:
    role = Role.MIRROR

    def __init__(self, name: str, node, primary_rpc: str, primary_http: str, config: Config,
                 *, clock: Clock = SYSTEM, trust: Trust | None = None, link=None) -> None:
        self.name = name
        self.node = node
        self.primary_rpc, self.primary_http = primary_rpc, primary_http
        self.config = config
        self.clock = clock
        self.trust = trust
        self.follower = Follower(node.store.following(), clock())
        self.applied = 0  # log entries and dumped records applied (for tests and stats)
        # called with (now - commit time) of every log entry applied (benchmarks/replication_lag)
        self.observe: Callable[[float], None] | None = None
        rpc = dataclasses.replace(config.rpc,  # a long-poll's answer may take poll_wait
                                  timeout=config.rpc.timeout + config.replication.poll_wait)
        self._client = RpcClient(*split_address(primary_rpc), rpc, clock=clock, trust=trust)
        # the WAN link to the primary (resolver.link): distance, loss and partitions delay or
        # cut replication as they do every other call between the two cities
        self._client.link = link
        self._stepping = asyncio.Lock()  # one step at a time (the loop's, or a test's)
        self._task: asyncio.Task | None = None

    def __getattr__(self, attr: str):  # reads as the node it wraps
        if attr == "node":  # not set yet: no recursion
            raise AttributeError(attr)
        return getattr(self.node, attr)

    # ------------------------------------------------------------------ writes: refused
    def refusal(self, handle: str | None = None) -> WriteRefused:
        return WriteRefused(self.name, self.primary_http, handle)

    async def put(self, handle, *args, **kw):
        raise self.refusal(handle.text)

    async def delete(self, handle, *args, **kw):
        raise self.refusal(handle.text)

    async def register_many(self, *args, **kw):
        raise self.refusal()

    async def create_prefix(self, prefix, *args, **kw):
        raise self.refusal(prefix)

    async def add_node(self, *args, **kw):
        raise self.refusal()

    async def register_prefixes(self, *args, **kw):
        raise self.refusal()

    async def bootstrap(self, *args, **kw):
        raise self.refusal()

    # ------------------------------------------------------------------ reads
    def rpc_handlers(self) -> dict:
        """The wrapped node's read methods only (``resolve``; ``delegate`` of a top)."""
        return {k: m for k, m in self.node.rpc_handlers().items() if k in READ_METHODS}

    def report_stats(self) -> dict:
        """The wrapped node's counters, under this mirror's role."""
        return dict(self.node.report_stats(), role=self.role)

    def lag_seconds(self) -> float:
        return self.follower.lag(self.clock())

    @property
    def ready(self) -> bool:
        """Dumped and following (``/readyz``): a mirror in the middle of a dump serves
        partial data, so it is not ready until the dump is done."""
        return not self.follower.position.dumping

    # ------------------------------------------------------------------ following
    async def start(self) -> None:
        """Begin dump-then-follow in the background."""
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        cfg = self.config.replication
        while True:
            try:
                await self.step(cfg.poll_wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the primary is down, or answered oddly: ask again
                self.follower.failed(self.clock())
                log.debug("%s: following %s failed: %s", self.name, self.primary_rpc, exc)
                await self.clock.sleep(cfg.retry)

    async def step(self, wait: float) -> None:
        """One request to the primary and, if it brought changes, one durable apply."""
        async with self._stepping:
            await self._step(wait)

    async def _step(self, wait: float) -> None:
        need = self.follower.need()
        if isinstance(need, DumpPage):
            reply = await self._client.call("repl_dump", need.after)
            apply = self.follower.dumped(reply, self.clock())
        else:
            reply = await self._client.call("repl_log", need.epoch, need.seq, wait)
            apply = self.follower.logged(reply, self.clock())
        if apply is None:
            return
        store = self.node.store
        await store.apply(apply.changes, apply.position.marker(), clear=apply.clear)
        authority = getattr(self.node, "authority", None)
        if authority is not None:  # memos of what just changed are no longer true
            authority.clear() if apply.clear else authority.forget([k for k, _ in apply.changes])
        now = self.clock()
        self.follower.applied(apply, now)
        self.applied += len(apply.changes)
        if self.observe is not None:
            for t in apply.commit_times:
                self.observe(now - t)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._client.close()
        await self.node.close()
