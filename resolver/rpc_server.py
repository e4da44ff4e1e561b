"""The serving end of node-to-node RPC: ``RpcServer`` answers msgpack-rpc requests with
``handlers[method](*params)``.

A handler returns a value or an awaitable. Requests on one connection run concurrently and
answers go out as they are ready (not in request order), coalesced per loop iteration.
Invariants: a request gets exactly one response while its connection is open; a
``HandleError`` keeps its code, message and handle, any other exception becomes
``ERROR "internal error: <type>"`` (and is logged); notifications never produce bytes; input
that is not msgpack-rpc, or a message over ``RpcConfig.max_message``, closes only the
connection it came on, after the answers already produced. The listening socket binds with
SO_REUSEADDR (see ``resolver.net`` for why that matters).
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from .config import RpcConfig
from .errors import PROTOCOL_ERROR, HandleError
from .rpc_wire import (NOTIFY, PLAIN, REQUEST, RESPONSE, Malformed, Stream, error_field, log,
                       set_nodelay)

__all__ = ["RpcServer"]


class _ServerConnection(Stream):
    __slots__ = ("_server", "_handlers")

    def __init__(self, server: "RpcServer"):
        super().__init__(server.config.max_message)
        self._server = server
        self._handlers = server._handlers

    def connection_made(self, transport):
        self.transport = transport
        set_nodelay(transport)
        self._server._conns.add(self)
        self._server.connections_opened += 1

    def connection_lost(self, exc):
        self._server._conns.discard(self)
        self.transport = None

    def data_received(self, data):
        unpacker = self._unpacker
        try:
            unpacker.feed(data)
            for msg in unpacker:
                self._dispatch(msg)
        except Exception as exc:  # undecodable bytes, oversized message, wrong shape
            if self.transport is not None:
                log.warning("rpc: closing connection from %s: malformed input (%s: %s)",
                            self.transport.get_extra_info("peername"), type(exc).__name__, exc)
                self.close()  # stops reading; answers already produced still go out

    def _dispatch(self, msg):
        if type(msg) is not list:
            raise Malformed("message is not an array")
        n = len(msg)
        if n == 4 and msg[0] == REQUEST:
            _, msgid, method, params = msg
            if type(msgid) is not int or type(method) is not str or type(params) is not list:
                raise Malformed("bad request")
            handler = self._handlers.get(method)
            if handler is None:
                self._send(msgid, [PROTOCOL_ERROR, f"unknown method {method}", None], None)
                return
            try:
                result = handler(*params)
            except Exception as exc:
                if not isinstance(exc, HandleError):
                    log.exception("rpc: handler %s failed", method)
                self._send(msgid, error_field(exc), None)
                return
            if type(result) in PLAIN or not inspect.isawaitable(result):
                self._send(msgid, None, result)
            else:
                self._server._track(self._loop.create_task(self._finish(msgid, method, result)))
        elif n == 3 and msg[0] == NOTIFY:
            _, method, params = msg
            if type(method) is not str or type(params) is not list:
                raise Malformed("bad notification")
            handler = self._handlers.get(method)
            if handler is None:
                log.warning("rpc: notification for unknown method %s", method)
                return
            try:
                result = handler(*params)
            except HandleError as exc:
                log.debug("rpc: notification %s: %s", method, exc)
                return
            except Exception:
                log.exception("rpc: notification handler %s failed", method)
                return
            if type(result) not in PLAIN and inspect.isawaitable(result):
                self._server._track(self._loop.create_task(self._finish(None, method, result)))
        else:
            raise Malformed("not a request or notification")

    async def _finish(self, msgid, method, awaitable):
        try:
            result = await awaitable
        except Exception as exc:
            if not isinstance(exc, HandleError):
                log.exception("rpc: handler %s failed", method)
            elif msgid is None:
                log.debug("rpc: notification %s: %s", method, exc)
            if msgid is not None:
                self._send(msgid, error_field(exc), None)
            return
        if msgid is not None:
            self._send(msgid, None, result)

    def _send(self, msgid, error, result):
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the caller has gone; nobody to answer
        try:
            data = self.packer.pack([RESPONSE, msgid, error, result])
        except Exception as exc:  # a result msgpack cannot encode
            log.exception("rpc: cannot encode answer to msgid %s", msgid)
            data = self.packer.pack([RESPONSE, msgid, error_field(exc), None])
        self.send(data)


class RpcServer:
    """Serves ``handlers[method](*params)``; a handler returns a value or an awaitable.

    ``config`` (default ``RpcConfig()``) gives ``max_message``, the largest message accepted.
    Requests on one connection run concurrently; answers go out as they are ready.
    """

    def __init__(self, handlers: dict[str, Callable[..., Any]], config: RpcConfig | None = None):
        self._handlers = dict(handlers)
        self.config = config or RpcConfig()
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_ServerConnection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._port: int | None = None
        self.connections_opened = 0  # total accepted, for tests and stats

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RpcServer not started")
        return self._port

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "RpcServer":
        """Listen on host:port (port 0: any free port, then see ``port``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ServerConnection(self), host, port,
                                                reuse_address=True)
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
