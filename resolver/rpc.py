"""Node-to-node RPC: msgpack-rpc over one persistent, pipelined TCP stream per peer.

Wire format is the public msgpack-rpc spec: request ``[0, msgid, method, params]``, response
``[1, msgid, error, result]``, notification ``[2, method, params]``; ``params`` is an array,
bytes travel as msgpack bin and come back as bytes. An error is ``[code, message, handle]`` with
the Handle responseCode, so a failure on a remote node surfaces as the same ``HandleError`` (and
the same HTTP status) it would have been locally.

Why not HTTP between nodes: a forwarded resolution is a few hundred bytes, and one long-lived
stream per peer with many outstanding calls keyed by msgid costs a few bytes of framing per call,
with no connection setup, no header parsing and no head-of-line blocking behind slow requests.
Messages produced in the same event-loop iteration are coalesced into one write.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from typing import Any, Callable

import msgpack

from .errors import ERROR, PROTOCOL_ERROR, HandleError, PeerUnavailable

__all__ = ["RpcServer", "RpcClient", "REQUEST", "RESPONSE", "NOTIFY"]

log = logging.getLogger(__name__)

REQUEST, RESPONSE, NOTIFY = 0, 1, 2
MAX_BUFFER = 16 * 1024 * 1024  # largest single message either side accepts
_MSGID_MASK = 0xFFFFFFFF


def _packer() -> msgpack.Packer:
    # Same bytes as msgpack.packb(obj, use_bin_type=True); one Packer per connection saves
    # building a Packer on every message.
    return msgpack.Packer(use_bin_type=True)


def _unpacker(max_buffer_size: int) -> msgpack.Unpacker:
    # strict_map_key=False: peers are our own nodes, and int map keys (value indexes) are
    # legitimate; with the default a dict like {100: ...} would kill the connection.
    return msgpack.Unpacker(raw=False, max_buffer_size=max_buffer_size, strict_map_key=False)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # not TCP (e.g. a unix socket in a test)
            pass


def _error_field(exc: BaseException) -> list:
    if isinstance(exc, HandleError):
        return [exc.code, exc.message, exc.handle]
    return [ERROR, f"internal error: {type(exc).__name__}", None]


class _Malformed(Exception):
    pass


_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict})  # never awaitable


class _Stream(asyncio.Protocol):
    """A connection's transport plus a write buffer flushed once per loop iteration.

    Messages produced in the same iteration (a burst of calls, the answers to one chunk of
    requests) go out in one write instead of one send() each, which about doubles calls/s.
    """

    __slots__ = ("transport", "_loop", "_wbuf", "packer", "_unpacker")

    def __init__(self, max_buffer: int):
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._wbuf: list[bytes] = []
        self.packer = _packer()
        self._unpacker = _unpacker(max_buffer)

    def send(self, data: bytes) -> None:
        buf = self._wbuf
        buf.append(data)
        if len(buf) == 1:
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        buf = self._wbuf
        if not buf:
            return
        self._wbuf = []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def close(self) -> None:
        """Flush what is buffered, then close (the transport still drains its own buffer)."""
        self.flush()
        if self.transport is not None:
            self.transport.close()


# --------------------------------------------------------------------------------- server


class _ServerConnection(_Stream):
    __slots__ = ("_server", "_handlers")

    def __init__(self, server: "RpcServer"):
        super().__init__(server._max_buffer)
        self._server = server
        self._handlers = server._handlers

    def connection_made(self, transport):
        self.transport = transport
        _nodelay(transport)
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
            raise _Malformed("message is not an array")
        n = len(msg)
        if n == 4 and msg[0] == REQUEST:
            _, msgid, method, params = msg
            if type(msgid) is not int or type(method) is not str or type(params) is not list:
                raise _Malformed("bad request")
            handler = self._handlers.get(method)
            if handler is None:
                self._send(msgid, [PROTOCOL_ERROR, f"unknown method {method}", None], None)
                return
            try:
                result = handler(*params)
            except Exception as exc:
                if not isinstance(exc, HandleError):
                    log.exception("rpc: handler %s failed", method)
                self._send(msgid, _error_field(exc), None)
                return
            if type(result) in _PLAIN or not inspect.isawaitable(result):
                self._send(msgid, None, result)
            else:
                self._server._track(self._loop.create_task(self._finish(msgid, method, result)))
        elif n == 3 and msg[0] == NOTIFY:
            _, method, params = msg
            if type(method) is not str or type(params) is not list:
                raise _Malformed("bad notification")
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
            if type(result) not in _PLAIN and inspect.isawaitable(result):
                self._server._track(self._loop.create_task(self._finish(None, method, result)))
        else:
            raise _Malformed("not a request or notification")

    async def _finish(self, msgid, method, awaitable):
        try:
            result = await awaitable
        except Exception as exc:
            if not isinstance(exc, HandleError):
                log.exception("rpc: handler %s failed", method)
            elif msgid is None:
                log.debug("rpc: notification %s: %s", method, exc)
            if msgid is not None:
                self._send(msgid, _error_field(exc), None)
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
            data = self.packer.pack([RESPONSE, msgid, _error_field(exc), None])
        self.send(data)


class RpcServer:
    """Serves ``handlers[method](*params)``; a handler returns a value or an awaitable.

    Requests on one connection run concurrently; answers go out as they are ready.
    """

    def __init__(self, handlers: dict[str, Callable[..., Any]], *, max_buffer: int = MAX_BUFFER):
        self._handlers = dict(handlers)
        self._max_buffer = max_buffer
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


# --------------------------------------------------------------------------------- client


class _ClientConnection(_Stream):
    __slots__ = ("_client", "pending", "lost", "_closed")

    def __init__(self, client: "RpcClient"):
        super().__init__(client._max_buffer)
        self._client = client
        self.pending: dict[int, asyncio.Future] = {}
        self.lost = False
        self._closed = self._loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        _nodelay(transport)

    def connection_lost(self, exc):
        why = f"connection to {self._client.address} lost" + (f" ({exc})" if exc else "")
        self._drop(why)
        if not self._closed.done():
            self._closed.set_result(None)

    def _drop(self, why: str) -> None:
        """Mark this connection dead and fail every call still waiting on it."""
        self.lost = True
        client = self._client
        if client._conn is self:
            client._conn = None
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(PeerUnavailable(why))

    def data_received(self, data):
        pending = self.pending
        try:
            self._unpacker.feed(data)
            for msg in self._unpacker:
                if type(msg) is list and len(msg) == 4 and msg[0] == RESPONSE:
                    fut = pending.get(msg[1])
                    if fut is None or fut.done():
                        continue  # timed out or cancelled meanwhile
                    error = msg[2]
                    if error is None:
                        fut.set_result(msg[3])
                    else:
                        fut.set_exception(_rebuild_error(error))
                elif type(msg) is list and len(msg) == 3 and msg[0] == NOTIFY:
                    continue  # server-to-client notifications are not used
                else:
                    raise _Malformed("not a response")
        except Exception as exc:
            log.warning("rpc: closing connection to %s: malformed input (%s: %s)",
                        self._client.address, type(exc).__name__, exc)
            self._drop(f"malformed answer from {self._client.address}")
            if self.transport is not None:
                self.transport.abort()


def _rebuild_error(error: Any) -> HandleError:
    if type(error) is list and error and type(error[0]) is int:
        message = error[1] if len(error) > 1 else None
        handle = error[2] if len(error) > 2 else None
        return HandleError(error[0], message if isinstance(message, str) else None,
                           handle=handle if isinstance(handle, str) else None)
    return HandleError(ERROR, str(error))


class RpcClient:
    """One lazily opened, pipelined connection to one peer, shared by all callers.

    Every failure to reach the peer (refused, lost with calls pending, timed out) raises
    ``PeerUnavailable``; a connect that failed less than ``retry_after`` seconds ago makes
    the next calls fail at once without trying again.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 2.0,
                 connect_timeout: float = 1.0, retry_after: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, max_buffer: int = MAX_BUFFER):
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_after = retry_after
        self._clock = clock
        self._max_buffer = max_buffer
        self._conn: _ClientConnection | None = None
        self._connecting: asyncio.Task | None = None
        self._failed_at: float | None = None
        self._failure = ""
        self._next_id = 0
        self._closed = False
        self.connect_attempts = 0  # for tests and stats

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
                if age < self.retry_after:
                    raise PeerUnavailable(f"peer {self.address} unavailable "
                                          f"(connect failed {age:.2f}s ago: {self._failure})")
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(_consume)
        return task

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self.connect_attempts += 1
        try:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, conn = await loop.create_connection(lambda: _ClientConnection(self),
                                                           self.host, self.port)
            except (OSError, TimeoutError) as exc:
                self._failed_at = self._clock()
                if isinstance(exc, TimeoutError):
                    self._failure = f"no connection within {self.connect_timeout}s"
                else:
                    self._failure = exc.strerror or type(exc).__name__
                raise PeerUnavailable(f"cannot connect to {self.address}: {self._failure}") from None
            if self._closed:
                conn.transport.close()
                raise PeerUnavailable(f"rpc client for {self.address} is closed")
            if not conn.lost:
                self._conn = conn
                self._failed_at = None
        finally:
            self._connecting = None

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
        conn = self._conn
        if conn is None:
            conn = await self._connection()
        msgid = self._next_id
        pending = conn.pending
        while msgid in pending:  # only after a wrap with a call 2**32 ids old still open
            msgid = (msgid + 1) & _MSGID_MASK
        self._next_id = (msgid + 1) & _MSGID_MASK
        data = conn.packer.pack([REQUEST, msgid, method, params])
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        pending[msgid] = fut
        timer = loop.call_later(self.timeout, self._expire, fut, method)
        conn.send(data)
        try:
            return await fut
        finally:
            timer.cancel()
            if pending.get(msgid) is fut:
                del pending[msgid]

    def _expire(self, fut: asyncio.Future, method: str) -> None:
        if not fut.done():
            fut.set_exception(PeerUnavailable(
                f"{self.address} did not answer {method} within {self.timeout}s"))

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
        """Close the connection; calls still pending fail with PeerUnavailable."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        conn = self._conn
        if conn is not None:
            conn._drop(f"rpc client for {self.address} closed")
            conn.close()
            try:
                async with asyncio.timeout(1.0):
                    await conn._closed
            except TimeoutError:
                conn.transport.abort()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


def _consume(task: asyncio.Task) -> None:
    # Connect failures reach callers through shield(); this keeps asyncio from warning about an
    # exception nobody retrieved when the only waiter was a notification or was cancelled.
    if not task.cancelled():
        task.exception()
