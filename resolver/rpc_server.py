"""The serving end of node-to-node RPC: ``RpcServer`` answers msgpack-rpc requests.

With ``trust`` (how the nodes of a cluster serve), every handler is a ``rpc_auth.Method`` and
a connection must prove which node it is (``resolver.rpc_auth``'s handshake) before anything
is dispatched; then ``fn(caller, *params)`` runs if the caller's role may call the method
and the params fit its signature. Without ``trust`` (unit tests of the wire only) handlers
are plain callables, ``fn(*params)``.

A handler returns a value or an awaitable. Requests on one connection run concurrently and
answers go out as they are ready (not in request order), coalesced per loop iteration.

Invariants: a request gets exactly one response while its connection is open; a
``HandleError`` keeps its code, message and handle, any other exception becomes
``ERROR "internal error: <type>"``; notifications never produce bytes. An unauthenticated or
unauthorised request is answered with an error (``[403, ...]`` or ``[400, ...]``) and its
connection closed, and nothing after it on that connection is dispatched. Input that is not
msgpack-rpc, a message over ``max_message``, a length header declaring more than that, a
message not completed within ``message_timeout``, more than ``max_unproven`` bytes or no
handshake within ``handshake_timeout``, and ``idle_timeout`` without a byte each close only
that connection, after the answers already produced. At most ``max_connections`` are open: beyond, the oldest connection that
has not authenticated yet is closed to make room, else the new one. Warning lines are
throttled (``log_burst`` per ``log_window``). Every timer runs on the injected clock. The
listening socket binds with SO_REUSEADDR (see ``resolver.net``).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable

from .clock import SYSTEM, Clock
from .config import RpcConfig
from .errors import INSUFFICIENT_PERMISSIONS, INVALID_VALUE, PROTOCOL_ERROR, HandleError
from .rpc_auth import CHALLENGE, HELLO, REFUSED, WELCOME, Caller, Method, Trust, refused
from .rpc_wire import (NOTIFY, PLAIN, REQUEST, RESPONSE, Lengths, Malformed, Stream, Throttle,
                       error_field, log, set_nodelay)

__all__ = ["RpcServer"]


class _ServerConnection(Stream):
    __slots__ = ("_server", "_handlers", "caller", "_nonce", "_fed", "_ended", "_start",
                 "_lengths", "_last", "_timers", "peer")

    def __init__(self, server: "RpcServer"):
        super().__init__(server.config.max_message)
        self._server = server
        self._handlers = server._handlers
        self.caller: Caller | None = None
        self._nonce = b""
        self._fed = 0          # bytes fed to the unpacker so far
        self._ended = 0        # where the last whole message ended (the unpacker's tell()
                               # counts the header of one still arriving as read)
        self._start = 0        # where the message still arriving began (stream offset)
        self._lengths: Lengths | None = None
        self._last = 0.0       # clock time of the last byte in or out
        self._timers: dict[str, Any] = {}
        self.peer = None

    # ---------------------------------------------------------------- lifecycle
    def connection_made(self, transport):
        self.transport = transport
        server = self._server
        self.peer = transport.get_extra_info("peername")
        if not server._admit(self):
            server.warn("rpc: refusing connection from %s: %d connections open",
                        self.peer, len(server._conns))
            transport.abort()
            self.transport = None
            return
        set_nodelay(transport)
        server.connections_opened += 1
        clock, config = server.clock, server.config
        self._last = clock()
        self._timers["idle"] = clock.call_later(config.idle_timeout, self._idle)
        if server.trust is not None:
            self._nonce = server.trust.nonce()
            self.send(self.packer.pack([NOTIFY, CHALLENGE, server.trust.challenge(self._nonce)]))
            self._timers["handshake"] = clock.call_later(config.handshake_timeout, self._expire,
                                                         "no handshake")

    def connection_lost(self, exc):
        self._server._forget(self)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.transport = None

    def _expire(self, why: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._server.warn("rpc: closing connection from %s: %s within the time allowed",
                              self.peer, why)
            self.close()

    def _idle(self) -> None:
        if self.transport is None:
            return
        left = self._last + self._server.config.idle_timeout - self._server.clock()
        if left > 0:
            self._timers["idle"] = self._server.clock.call_later(left, self._idle)
        else:
            log.debug("rpc: closing idle connection from %s", self.peer)
            self.close()

    # ---------------------------------------------------------------- input
    def data_received(self, data):
        unpacker = self._unpacker
        self._last = self._server.clock()
        before = self._fed
        self._fed += len(data)
        try:
            if self.caller is None and self._fed - self._ended > self._server.unproven_limit:
                raise Malformed("too much sent before authenticating")
            unpacker.feed(data)
            for msg in unpacker:
                self._ended = unpacker.tell()
                self._dispatch(msg)
                if self.transport is None or self.transport.is_closing():
                    return  # closed by this message: nothing after it is dispatched
            self._track_partial(data, before, self._ended)
        except Exception as exc:  # undecodable bytes, oversized message, wrong shape
            if self.transport is not None and not self.transport.is_closing():
                self._server.warn("rpc: closing connection from %s: malformed input (%s: %s)",
                                  self.peer, type(exc).__name__, str(exc)[:200])
                self.close()  # stops reading; answers already produced still go out

    def _track_partial(self, data: bytes, before: int, done: int) -> None:
        """Keep a message still arriving under its deadline and its length headers checked."""
        if done >= self._fed:  # nothing pending
            if self._lengths is not None:
                self._lengths = None
                self._timers.pop("message").cancel()
            return
        if self._lengths is None or done > self._start:  # a new message began in this data
            if self._lengths is not None:
                self._timers.pop("message").cancel()
            self._start = done
            self._lengths = Lengths(self._server.config.max_message)
            self._timers["message"] = self._server.clock.call_later(
                self._server.config.message_timeout, self._expire, "a message not completed")
            self._lengths.feed(data[done - before:])
        else:
            self._lengths.feed(data)

    def _dispatch(self, msg):
        if type(msg) is not list:
            raise Malformed("message is not an array")
        n = len(msg)
        if self.caller is None and self._server.trust is not None:
            return self._handshake(msg, n)
        if n == 4 and msg[0] == REQUEST:
            _, msgid, method, params = msg
            if type(msgid) is not int or type(method) is not str or type(params) is not list:
                raise Malformed("bad request")
        elif n == 3 and msg[0] == NOTIFY:  # a notification: no msgid, never answered
            _, method, params = msg
            msgid = None
            if type(method) is not str or type(params) is not list:
                raise Malformed("bad notification")
        else:
            raise Malformed("not a request or notification")
        handler = self._permitted(method, params, msgid)
        if handler is None:
            return
        caller = self.caller
        try:
            result = handler(*params) if caller is None else handler(caller, *params)
        except Exception as exc:
            self._failed(method, exc)
            if msgid is not None:
                self._send(msgid, error_field(exc), None)
            return
        if type(result) in PLAIN or not inspect.isawaitable(result):
            if msgid is not None:
                self._send(msgid, None, result)
        else:
            self._server._track(self._loop.create_task(self._finish(msgid, method, result)))

    def _handshake(self, msg: list, n: int) -> None:
        """Before authentication: a hello is checked, anything else refused and closed."""
        trust = self._server.trust
        try:
            if n == 3 and msg[0] == NOTIFY and msg[1] == HELLO:
                self.caller, welcome = trust.admit(self._nonce, msg[2])
                self._server._authenticated(self)
                self._timers.pop("handshake").cancel()
                self.send(self.packer.pack([NOTIFY, WELCOME, welcome]))
                return
            raise refused("not authenticated: a connection proves which node it is first")
        except HandleError as exc:
            self._server.warn("rpc: closing connection from %s: %s", self.peer, exc.message)
            if n == 4 and msg[0] == REQUEST and type(msg[1]) is int:
                self._send(msg[1], error_field(exc), None)
            else:
                self.send(self.packer.pack([NOTIFY, REFUSED, error_field(exc)]))
            self.close()

    def _permitted(self, method: str, params: list, msgid: int | None) -> Callable | None:
        """The function to run for this call (called with the caller first when there is
        one), or None when the call was answered (or dropped) here."""
        handler = self._handlers.get(method)
        if handler is None:
            if msgid is not None:
                self._send(msgid, [PROTOCOL_ERROR, f"unknown method {method}"[:300], None], None)
            else:
                log.debug("rpc: notification for unknown method %s", method[:100])
            return None
        caller = self.caller
        if caller is None:
            return handler  # a server without trust: plain callables
        if not handler.admits(caller):
            self._server.warn("rpc: closing connection from %s: node %s (%s) may not call %s",
                              self.peer, caller.name, caller.role, method)
            if msgid is not None:
                self._send(msgid, [INSUFFICIENT_PERMISSIONS, f"node {caller.name} may not "
                                   f"call {method}", None], None)
            self.close()
            return None
        least, most = handler.arity
        if not least <= len(params) <= most:
            if msgid is not None:
                self._send(msgid, [INVALID_VALUE, f"{method} takes {least}"
                                   + ("" if most == least else f" to {most}")
                                   + f" params, not {len(params)}", None], None)
            return None
        return handler.fn

    def _failed(self, method: str, exc: Exception) -> None:
        if isinstance(exc, HandleError):
            log.debug("rpc: %s: %s", method, exc)
        else:
            self._server.warn("rpc: handler %s failed", method, exc_info=exc, level=logging.ERROR)

    async def _finish(self, msgid, method, awaitable):
        try:
            result = await awaitable
        except Exception as exc:
            result, error = None, error_field(exc)
            self._failed(method, exc)
        else:
            error = None
        self._last = self._server.clock()  # an answer going out later than the request came
        if msgid is not None:
            self._send(msgid, error, result)

    def _send(self, msgid, error, result):
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the caller has gone; nobody to answer
        try:
            data = self.packer.pack([RESPONSE, msgid, error, result])
        except Exception as exc:  # a result msgpack cannot encode
            self._server.warn("rpc: cannot encode answer to msgid %s", msgid, exc_info=exc,
                              level=logging.ERROR)
            data = self.packer.pack([RESPONSE, msgid, error_field(exc), None])
        self.send(data)  # the time of this output: set by data_received or _finish


class RpcServer:
    """Serves the ``handlers``: ``rpc_auth.Method`` values with ``trust``, plain callables
    without. ``config`` (default ``RpcConfig()``) gives every limit; ``clock`` runs the
    timers. Requests on one connection run concurrently; answers go out as they are ready.
    """

    def __init__(self, handlers: dict[str, Any], config: RpcConfig | None = None, *,
                 trust: Trust | None = None, clock: Clock = SYSTEM):
        kinds = {isinstance(h, Method) for h in handlers.values()}
        if kinds and kinds != {trust is not None}:
            raise ValueError("an RpcServer with trust serves rpc_auth.Method handlers, one "
                             "without trust plain callables")
        self._handlers = dict(handlers)
        self.config = config or RpcConfig()
        self.trust = trust
        self.clock = clock
        # what a connection may send before it is proven (it buffers at most that much)
        self.unproven_limit = self.config.max_unproven if trust is not None else float("inf")
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_ServerConnection] = set()
        self._unproven: dict[_ServerConnection, None] = {}  # oldest first
        self._tasks: set[asyncio.Task] = set()
        self._port: int | None = None
        self._warnings = Throttle(self.config.log_burst, self.config.log_window, clock)
        self.connections_opened = 0  # total accepted, for tests and stats
        self.warnings_dropped = 0    # warning lines left out by the throttle, in all

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RpcServer not started")
        return self._port

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    def warn(self, msg: str, *args: Any, exc_info: BaseException | None = None,
             level: int = logging.WARNING) -> None:
        """A warning line, unless the throttle says too many were written lately."""
        dropped = self._warnings.allow()
        if dropped is None:
            self.warnings_dropped += 1
            return
        if dropped:
            msg += f" ({dropped} similar lines left out)"
        log.log(level, msg, *args, exc_info=exc_info)

    def _admit(self, conn: _ServerConnection) -> bool:
        if len(self._conns) >= self.config.max_connections:
            victim = next(iter(self._unproven), None)
            if victim is None:
                return False
            self._forget(victim)
            if victim.transport is not None:
                victim.transport.abort()
        self._conns.add(conn)
        if self.trust is not None:
            self._unproven[conn] = None
        return True

    def _authenticated(self, conn: _ServerConnection) -> None:
        self._unproven.pop(conn, None)

    def _forget(self, conn: _ServerConnection) -> None:
        self._conns.discard(conn)
        self._unproven.pop(conn, None)

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    reuse_port: bool = False) -> "RpcServer":
        """Listen on host:port (port 0: any free port, then see ``port``); ``reuse_port``:
        with the other processes serving this node (``SO_REUSEPORT``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ServerConnection(self), host, port,
                                                reuse_address=True,
                                                reuse_port=reuse_port or None)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening, drop every open connection and cancel handlers still running."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks run

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
