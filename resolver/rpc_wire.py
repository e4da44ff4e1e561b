"""The msgpack-rpc wire format and the framed stream both ends of a node-to-node link share.

Messages are the public msgpack-rpc spec: request ``[0, msgid, method, params]``, response
``[1, msgid, error, result]``, notification ``[2, method, params]``; ``params`` is an array,
bytes travel as msgpack bin and come back as bytes. An error is ``[code, message, handle]``
with the Handle responseCode (``error_field`` builds it, ``rebuild_error`` reads it back), so
a failure on a remote node surfaces as the same ``HandleError`` it would have been locally.

``Stream`` is a connection's transport plus a write buffer flushed once per event-loop
iteration: messages produced in the same iteration go out in one write. Invariants: bytes are
written in the order ``send`` was called; nothing is written once the transport is closing;
a message larger than the configured ``max_message`` is never decoded (the unpacker raises).
"""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import msgpack

from .errors import ERROR, HandleError

__all__ = ["REQUEST", "RESPONSE", "NOTIFY", "MSGID_MASK", "PLAIN", "Malformed", "Stream",
           "error_field", "rebuild_error", "set_nodelay", "log"]

# One logger for both ends, so ``resolver.rpc`` names every RPC log line.
log = logging.getLogger("resolver.rpc")

REQUEST, RESPONSE, NOTIFY = 0, 1, 2
MSGID_MASK = 0xFFFFFFFF  # msgids are unsigned 32-bit and wrap
PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict})  # never awaitable


class Malformed(Exception):
    """A message that decodes but is not a valid msgpack-rpc message for this end."""


def _packer() -> msgpack.Packer:
    # Same bytes as msgpack.packb(obj, use_bin_type=True); one Packer per connection saves
    # building a Packer on every message.
    return msgpack.Packer(use_bin_type=True)


def _unpacker(max_buffer_size: int) -> msgpack.Unpacker:
    # strict_map_key=False: peers are our own nodes, and int map keys (value indexes) are
    # legitimate; with the default a dict like {100: ...} would kill the connection.
    return msgpack.Unpacker(raw=False, max_buffer_size=max_buffer_size, strict_map_key=False)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # not TCP (e.g. a unix socket in a test)
            pass


def error_field(exc: BaseException) -> list:
    """The ``error`` of a response for an exception raised by a handler."""
    if isinstance(exc, HandleError):
        return [exc.code, exc.message, exc.handle]
    return [ERROR, f"internal error: {type(exc).__name__}", None]


def rebuild_error(error: Any) -> HandleError:
    """The HandleError a response's ``error`` stands for (ERROR when it is not well formed)."""
    if type(error) is list and error and type(error[0]) is int:
        message = error[1] if len(error) > 1 else None
        handle = error[2] if len(error) > 2 else None
        return HandleError(error[0], message if isinstance(message, str) else None,
                           handle=handle if isinstance(handle, str) else None)
    return HandleError(ERROR, str(error))


class Stream(asyncio.Protocol):
    """A connection's transport plus a write buffer flushed once per loop iteration.

    Messages produced in the same iteration (a burst of calls, the answers to one chunk of
    requests) go out in one write instead of one send() each, which about doubles calls/s.
    """

    __slots__ = ("transport", "_loop", "_wbuf", "packer", "_unpacker")

    def __init__(self, max_message: int):
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._wbuf: list[bytes] = []
        self.packer = _packer()
        self._unpacker = _unpacker(max_message)

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
