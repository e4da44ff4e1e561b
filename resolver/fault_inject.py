"""Applying ``resolver.faults.FaultState`` to the nodes a host process serves.

``Injector.attach`` registers one node's HTTP face (``web.NodeAPI`` and its runner) and RPC
server (``wiring.start_nodes`` calls it once per node, one hook line). ``Injector.update``
(after every change of the state, and by itself at a fault's expiry) brings each node in line:

- A node with a ``down``, ``slow``, ``errors`` or ``partition`` fault gets wrappers: its
  ``NodeAPI.dispatch`` is shadowed by an instance attribute and each of its RPC handlers
  (``rpc_auth.Method``) is replaced by one whose function checks the faults first. A node
  without such a fault has neither: the class's ``dispatch`` and the original handlers serve,
  so the cost of this module with no fault active is nothing per request.
- ``refuse`` closes the node's listening sockets (HTTP site and RPC server, dropping their
  connections) and opens them again on the same addresses when it ends (with
  ``SO_REUSEPORT`` when other processes serve the node too: ``topology.fault_control`` sets a
  fault in every process serving the node, so each closes its own).

Behaviour per request with a fault: ``down`` waits until the node is up again (the client
times out; aiohttp cancels the handler when the client goes); ``slow`` sleeps on the injected
clock; ``errors`` answers 503 (Handle-shaped) / an RPC error (code 3); ``partition`` answers
an RPC error to a caller on the other side (``FaultState.blocked``; the caller is the node
the RPC connection authenticated as).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field

from aiohttp import web

from resolver import errors
from resolver.clock import Clock
from resolver.faults import FaultState
from resolver.rpc_auth import Method

log = logging.getLogger("idsim.faults")
WRAPPED = {"down", "slow", "errors", "partition"}  # kinds served through wrappers


@dataclass(eq=False)
class Target:
    """One node's serving parts, as attached."""
    name: str
    api: object
    runner: web.BaseRunner
    rpc: object | None
    http_where: tuple = ()          # (host, port, ssl_context, reuse_port) to reopen with
    rpc_where: tuple = ()           # (host, port, reuse_port)
    handlers: dict = field(default_factory=dict)  # the original RPC handlers
    wrapped: bool = False
    refused: bool = False
    up: asyncio.Event = field(default_factory=asyncio.Event)


class Injector:
    """The fault state of one host process, applied to its nodes (see the module docstring)."""

    def __init__(self, state: FaultState, clock: Clock) -> None:
        self.state = state
        self.clock = clock
        self.targets: dict[str, Target] = {}
        self._timer = None  # the clock's timer of the next expiry
        self.expiry: asyncio.Future | None = None  # the update an expiry started (last one)
        self._lock = asyncio.Lock()
        self.held = 0                     # requests waiting in a down or slow fault now
        self.holding = asyncio.Event()    # set when one starts waiting (tests wait on it)

    def attach(self, name: str, node, api, runner: web.BaseRunner, rpc=None) -> None:
        """Register a started node: its ``NodeAPI``, HTTP runner and RPC server (or None)."""
        site = next(iter(runner.sites))
        http = (site._host, runner.addresses[0][1], site._ssl_context, site._reuse_port)
        rpc_where = () if rpc is None else (rpc._server.sockets[0].getsockname()[0], rpc.port,
                                            bool(http[3]))  # shared with other processes
        target = Target(name, api, runner, rpc, http, rpc_where,
                        dict(rpc._handlers) if rpc is not None else {})
        target.up.set()
        self.targets[name] = target
        node.faults = self  # the node's metrics read its faults (idsim_fault_active)

    def faults_of(self, name: str) -> dict:
        """``{kind: Fault}`` live on the node (for metrics and the dashboard)."""
        return self.state.of(name)

    # ------------------------------------------------------------------ reconcile
    async def update(self) -> None:
        """Bring every attached node in line with the state; re-run at the next expiry."""
        async with self._lock:
            for target in self.targets.values():
                kinds = set(self.state.of(target.name))
                if "down" in kinds:
                    target.up.clear()
                else:
                    target.up.set()
                self._wrap(target, bool(kinds & WRAPPED))
                if ("refuse" in kinds) != target.refused:
                    await (self._close(target) if not target.refused else self._reopen(target))
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ends = self.state.next_expiry()
        if ends is not None:
            self._timer = self.clock.call_later(max(0.0, ends - self.clock()), self._expired)

    def _expired(self) -> None:
        self.expiry = asyncio.ensure_future(self.update())

    def _wrap(self, target: Target, on: bool) -> None:
        if on == target.wrapped:
            return
        target.wrapped = on
        if on:
            original = type(target.api).dispatch.__get__(target.api)
            target.api.dispatch = self._http(target, original)
        else:
            del target.api.dispatch  # the class's own again
        if target.rpc is not None:
            table = target.rpc._handlers  # shared with every open connection: change in place
            table.update({name: self._rpc(target, m) for name, m in target.handlers.items()}
                         if on else target.handlers)

    async def _close(self, target: Target) -> None:
        target.refused = True
        for site in list(target.runner.sites):
            await site.stop()
        server = target.runner.server
        if server is not None:
            for conn in list(server.connections):  # keep-alive connections end too
                conn.force_close()
                if conn.transport is not None:
                    conn.transport.close()
        if target.rpc is not None:
            await target.rpc.close()
        log.warning("fault: %s refuses connections", target.name)

    async def _reopen(self, target: Target) -> None:
        host, port, ssl_context, reuse_port = target.http_where
        site = web.TCPSite(target.runner, host, port, ssl_context=ssl_context,
                           reuse_port=reuse_port, backlog=1024)
        await site.start()
        if target.rpc is not None:
            host, port, reuse_port = target.rpc_where
            await target.rpc.start(host, port, reuse_port=reuse_port)
        target.refused = False
        log.warning("fault: %s accepts connections again", target.name)

    # ------------------------------------------------------------------ wrappers
    async def _obstruct(self, target: Target) -> None:
        """Wait while the node is down, then its slow delay (if any)."""
        if not target.up.is_set():
            await self._hold(target.up.wait())
        wait = self.state.delay(target.name)
        if wait > 0:
            await self._hold(self.clock.sleep(wait))

    async def _hold(self, waiting) -> None:
        self.held += 1
        self.holding.set()
        try:
            await waiting
        finally:
            self.held -= 1

    def _http(self, target: Target, dispatch):
        state, name = self.state, target.name

        async def faulty(request: web.BaseRequest) -> web.StreamResponse:
            await self._obstruct(target)
            if state.fails(name):
                from resolver.web import error_answer  # web imports metrics; lazily here
                return error_answer(request, errors.HandleError(
                    errors.SERVER_TOO_BUSY, f"injected fault: {name} answers errors",
                    status=503))
            return await dispatch(request)
        return faulty

    def _rpc(self, target: Target, method: Method) -> Method:
        state, name, fn = self.state, target.name, method.fn

        async def faulty(caller, *params):
            await self._obstruct(target)
            if state.blocked(caller.name, name):
                raise errors.PeerUnavailable(f"injected fault: {caller.name} and {name} "
                                             "are partitioned")
            if state.fails(name):
                raise errors.PeerUnavailable(f"injected fault: {name} answers errors")
            result = fn(caller, *params)
            return await result if inspect.isawaitable(result) else result
        wrapped = object.__new__(Method)  # same roles and arity, another function
        object.__setattr__(wrapped, "fn", faulty)
        object.__setattr__(wrapped, "roles", method.roles)
        object.__setattr__(wrapped, "arity", method.arity)
        return wrapped
