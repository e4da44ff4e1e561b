"""The calling end of node-to-node RPC: ``RpcClient``, one lazily opened, pipelined msgpack-rpc
connection to one peer, shared by every caller.

Time comes from the injected ``Clock``: a call's timeout and the connect timeout are
``clock.call_later`` timers, and the ``retry_after`` window after a failed connect is measured
with ``clock()``; every duration and size comes from ``RpcConfig``. The socket is opened by
``resolver.net.connect`` (SO_REUSEADDR set before connecting, so a TIME-WAIT it leaves behind
never blocks a node binding that port).

With ``trust`` (``resolver.rpc_auth.Trust``) a new connection first answers the server's
challenge and checks the server's proof (the handshake is part of connecting, under
``connect_timeout``); calls are sent only on a connection whose server proved it is a node of
the cluster. Answers larger than ``max_answer`` close the connection.

Invariants: every failure to reach the peer (refused, timed out, lost with calls pending,
malformed answer, client closed, a refused handshake) raises ``PeerUnavailable``; an error
answered by the peer raises the ``HandleError`` it carries; concurrent callers share one
connect attempt; within ``retry_after`` of a failed connect calls fail at once without trying
again; with a ``link`` (``resolver.link``, the WAN model) each call sleeps its modelled delays
both ways within its timeout and a connect pays its round trips, without one nothing is added;
a connection idle for half the server's ``idle_timeout`` is replaced before a call (the server
may be closing it just then); a call never leaves its msgid pending after it returns or
raises. A call costs no timer of its own: each connection keeps one, at its oldest deadline.

``call_soon`` is ``call`` without a task or a future, for a caller that can go on in a
callback (``resolver.fast_miss``): on a connection that is open and fresh, with no link, it
sends at once and its ``done(error, result)`` runs exactly once, from the connection's input,
its deadline or its loss, with the errors ``call`` would raise; otherwise it sends nothing and
returns False (the caller awaits ``call``, which connects or replaces the connection).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from . import net
from .clock import SYSTEM, Clock
from .config import RpcConfig
from .errors import HandleError, PeerUnavailable
from .link import Link
from .rpc_auth import Trust
from .rpc_client_conn import ClientConnection as _ClientConnection, Reply as _Reply
from .rpc_wire import MSGID_MASK, NOTIFY, REQUEST, log

__all__ = ["RpcClient"]


class RpcClient:
    """One lazily opened, pipelined connection to one peer, shared by all callers.

    ``config`` (default ``RpcConfig()``) gives ``timeout`` (s for an answer),
    ``connect_timeout``, ``retry_after`` (s a failed connect makes later calls fail at once),
    ``max_answer`` and ``close_timeout``; ``clock`` runs those timers; ``trust``, when
    given, is this node's part in the handshake (``resolver.rpc_auth``).
    """

    def __init__(self, host: str, port: int, config: RpcConfig | None = None, *,
                 clock: Clock = SYSTEM, trust: Trust | None = None):
        self.host = host
        self.trust = trust
        self.port = port
        self.address = f"{host}:{port}"
        self.config = config or RpcConfig()
        self._clock = clock
        self._conn: _ClientConnection | None = None
        self._connecting: asyncio.Task | None = None
        self._failed_at: float | None = None
        self._failure = ""
        self._next_id = 0
        self._closed = False
        self.connect_attempts = 0  # for tests and stats
        # (method, seconds, failed) after each call, failed = PeerUnavailable (metrics: h5)
        self.observer: Callable[[str, float, bool], None] | None = None
        self.link: Link | None = None  # the WAN delays to this peer (resolver.link): issue 10

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # -- connecting

    def _start_connect(self) -> asyncio.Task:
        """The connect in progress, or a new one; raises PeerUnavailable to fail fast."""
        if self._closed:
            raise PeerUnavailable(f"rpc client for {self.address} is closed")
        task = self._connecting
        if task is None:
            if self._failed_at is not None:
                age = self._clock() - self._failed_at
                if age < self.config.retry_after:
                    raise PeerUnavailable(f"peer {self.address} unavailable "
                                          f"(connect failed {age:.2f}s ago: {self._failure})")
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(_consume)
        return task

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self.connect_attempts += 1
        this = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            this.cancel()

        timer = self._clock.call_later(self.config.connect_timeout, expire)
        try:
            try:
                if self.link is not None:  # TCP's SYN / SYN-ACK, and the handshake's round trip
                    for _ in range(1 + (self.trust is not None)):
                        await self.link.round_trip()
                sock = await net.connect(self.host, self.port)
                try:
                    _, conn = await loop.create_connection(lambda: _ClientConnection(self),
                                                           sock=sock)
                except BaseException:
                    sock.close()
                    raise
                try:
                    await conn.ready
                except BaseException:
                    conn.abort()
                    raise
            except asyncio.CancelledError:
                if not expired:
                    raise
                this.uncancel()
                why = f"no connection within {self.config.connect_timeout}s"
                raise self._connect_failed(why) from None
            except OSError as exc:
                raise self._connect_failed(exc.strerror or type(exc).__name__) from None
            except HandleError as exc:  # the handshake failed, or the connection was lost
                raise self._connect_failed(exc.message or "handshake failed") from None
            finally:
                timer.cancel()
            if self._closed:
                conn.transport.close()
                raise PeerUnavailable(f"rpc client for {self.address} is closed")
            if not conn.lost:
                self._conn = conn
                self._failed_at = None
        finally:
            self._connecting = None

    def _connect_failed(self, why: str) -> PeerUnavailable:
        """Remember the failure (for ``retry_after``); the error to raise."""
        self._failed_at = self._clock()
        self._failure = why
        return PeerUnavailable(f"cannot connect to {self.address}: {why}")

    async def _connection(self) -> _ClientConnection:
        try:
            await asyncio.shield(self._start_connect())
        except asyncio.CancelledError:
            # The connect was cancelled by close(), not this caller: report it as such.
            if self._closed and not asyncio.current_task().cancelling():
                raise PeerUnavailable(f"rpc client for {self.address} is closed") from None
            raise
        conn = self._conn
        if conn is None:
            raise PeerUnavailable(f"connection to {self.address} lost")
        return conn

    # -- calls

    async def call(self, method: str, *params: Any) -> Any:
        """The peer's answer to ``method(*params)``, timed for ``observer`` when one is set."""
        observer = self.observer
        if observer is None:
            return await self._call(method, params)
        start, failed = self._clock(), False
        try:
            return await self._call(method, params)
        except PeerUnavailable:
            failed = True
            raise
        finally:
            observer(method, self._clock() - start, failed)

    async def _call(self, method: str, params: tuple) -> Any:
        conn = self._conn
        now = self._clock()
        if conn is not None:
            if now - conn.last >= self.config.idle_timeout / 2:
                # the server may be closing it as idle right now: a call sent there would be
                # lost with it, so a connection idle that long is replaced first
                self._conn = None
                conn.close()
                conn = None
            else:
                conn.last = now
        if conn is None:
            conn = await self._connection()
            now = self._clock()
        msgid = self._next_id
        pending = conn.pending
        while msgid in pending:  # only after a wrap with a call 2**32 ids old still open
            msgid = (msgid + 1) & MSGID_MASK
        self._next_id = (msgid + 1) & MSGID_MASK
        data = conn.packer.pack([REQUEST, msgid, method, params])
        fut = conn._loop.create_future()
        pending[msgid] = fut
        conn.deadlines.watch(now + self.config.timeout, fut, method)
        try:
            if self.link is None:
                conn.send(data)
                return await fut
            return await self._over_link(self.link, conn, data, fut)
        finally:
            if not fut.done():  # cancelled, or the link failed: the deadline passes it by
                fut.cancel()
            if pending.get(msgid) is fut:
                del pending[msgid]

    async def _over_link(self, link: Link, conn: _ClientConnection, data: bytes,
                         fut: asyncio.Future) -> Any:
        """Send and await the answer with the link's delays each way, within the timeout."""
        deadline = self._clock() + self.config.timeout
        try:
            await link.before_send(len(data), deadline)
        except BaseException:
            if fut.done() and not fut.cancelled():
                fut.exception()  # the timeout's or the lost connection's: nobody awaits it
            raise
        conn.send(data)
        result = await fut
        await link.before_deliver(len(result) if isinstance(result, (bytes, str)) else 0,
                                  deadline)
        return result

    def call_soon(self, method: str, params: tuple,
                  done: Callable[[BaseException | None, Any], None]) -> bool:
        """Send ``method(*params)`` now and have ``done(error, result)`` called with its
        outcome (the module's doc), or return False having sent nothing."""
        conn = self._conn
        if conn is None or self.link is not None:
            return False
        now = self._clock()
        if now - conn.last >= self.config.idle_timeout / 2:
            return False  # ``call`` replaces it first
        conn.last = now
        msgid = self._next_id
        pending = conn.pending
        while msgid in pending:
            msgid = (msgid + 1) & MSGID_MASK
        self._next_id = (msgid + 1) & MSGID_MASK
        reply = _Reply(done, pending, msgid, self, method, now)
        pending[msgid] = reply
        conn.deadlines.watch(now + self.config.timeout, reply, method)
        conn.send(conn.packer.pack([REQUEST, msgid, method, params]))
        return True

    def notify(self, method: str, *params: Any) -> None:
        """Send a notification; nothing comes back, failures to reach the peer are dropped."""
        conn = self._conn
        if conn is not None:
            conn.send(conn.packer.pack([NOTIFY, method, params]))
            return
        try:
            task = self._start_connect()
        except PeerUnavailable as exc:
            log.debug("rpc: notification %s dropped: %s", method, exc)
            return

        def send(_task):
            conn = self._conn
            if conn is not None:
                conn.send(conn.packer.pack([NOTIFY, method, params]))
            else:
                log.debug("rpc: notification %s to %s dropped: not connected", method, self.address)

        task.add_done_callback(send)

    async def close(self) -> None:
        """Close the connection; calls still pending fail with PeerUnavailable. Unsent bytes
        get ``close_timeout`` seconds to go out, then the connection is aborted."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        conn = self._conn
        if conn is not None:
            conn._drop(f"rpc client for {self.address} closed")
            conn.close()
            if not conn._closed.done():
                timer = self._clock.call_later(self.config.close_timeout, conn.abort)
                try:
                    await conn._closed
                finally:
                    timer.cancel()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


def _consume(task: asyncio.Task) -> None:
    # Connect failures reach callers through shield(); this keeps asyncio from warning about an
    # exception nobody retrieved when the only waiter was a notification or was cancelled.
    if not task.cancelled():
        task.exception()
