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

``Lengths`` walks the headers of a message that has not fully arrived, so a length header
declaring more than the cap (a 4 GiB bin, say) is refused at once instead of holding the
connection while it waits; ``Throttle`` bounds the warning lines a stream of bad input can
write (a burst per window, then one line saying how many were left out); ``Deadlines`` fails
each call still unanswered at its deadline with one timer for all of a connection's calls.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import Any, Callable

import msgpack

from .errors import ERROR, HandleError

__all__ = ["REQUEST", "RESPONSE", "NOTIFY", "MSGID_MASK", "PLAIN", "Malformed", "Stream",
           "Lengths", "Throttle", "Deadlines", "error_field", "rebuild_error", "set_nodelay",
           "log"]

# One logger for both ends, so ``resolver.rpc`` names every RPC log line.
log = logging.getLogger("resolver.rpc")

REQUEST, RESPONSE, NOTIFY = 0, 1, 2
MSGID_MASK = 0xFFFFFFFF  # msgids are unsigned 32-bit and wrap
PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict})  # never awaitable


class Malformed(Exception):
    """A message that decodes but is not a valid msgpack-rpc message for this end."""


class Lengths:
    """Resumable walk over the msgpack headers of one message still arriving.

    ``feed(data)`` raises Malformed as soon as a str/bin/ext header declares more bytes, or a
    container more items, than ``limit``, or nesting goes deeper than msgpack's own limit.
    State is a stack of items still expected, the payload bytes still to skip and at most a
    header's worth of bytes (memory O(depth)); each byte is looked at once per message.
    """

    __slots__ = ("limit", "_stack", "_skip", "_tail")
    MAX_DEPTH = 1024

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._stack = [1]
        self._skip = 0
        self._tail = b""

    def feed(self, data: bytes) -> None:
        buf = self._tail + data if self._tail else data
        pos, end, stack, limit = self._skip, len(buf), self._stack, self.limit
        while pos < end and stack:
            size, kind, n = _SHORT[buf[pos]]
            if kind is None:
                raise Malformed(f"byte 0x{buf[pos]:02x} is not msgpack")
            if kind == _LEN:  # n: bytes of a big-endian length after the type byte
                if pos + size > end:
                    break  # the rest of this header comes in a later read
                n, kind = int.from_bytes(buf[pos + 1:pos + 1 + n], "big"), _LONG[buf[pos]]
            payload = n if kind == _BYTES else 0
            count = n if kind == _ITEMS else 2 * n if kind == _PAIRS else 0
            if payload > limit or count > limit:
                raise Malformed(f"length header {max(payload, count)} over the limit {limit}")
            pos += size + payload
            stack[-1] -= 1
            if count:
                if len(stack) >= self.MAX_DEPTH:
                    raise Malformed("nested too deep")
                stack.append(count)
            while stack and not stack[-1]:
                stack.pop()
        if pos >= end:
            self._skip, self._tail = pos - end, b""
        else:
            self._skip, self._tail = 0, bytes(buf[pos:])


# What each first byte of a msgpack object says: (header bytes, kind, n). Kinds: _SCALAR (the
# header is all of it: fixint, nil, bool, float, int, fixext), _BYTES (n payload bytes follow:
# str, bin, ext), _ITEMS / _PAIRS (an array of n items / a map of n pairs follows), _LEN (a
# big-endian length of n bytes follows the type byte; _LONG says of which kind), None (0xc1).
_SCALAR, _BYTES, _ITEMS, _PAIRS, _LEN = range(5)


def _short(b: int) -> tuple[int, int | None, int]:
    if b <= 0x7F or b >= 0xE0:
        return 1, _SCALAR, 0
    if b <= 0x8F:
        return 1, _PAIRS, b & 0x0F
    if b <= 0x9F:
        return 1, _ITEMS, b & 0x0F
    if b <= 0xBF:
        return 1, _BYTES, b & 0x1F
    fixed = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
             0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}
    if b in fixed:
        return fixed[b], _SCALAR, 0
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4,
             0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}.get(b)
    if width is None:
        return 1, None, 0
    ext = 1 if 0xC7 <= b <= 0xC9 else 0  # an ext's type byte follows its length
    return 1 + width + ext, _LEN, width


_SHORT = [_short(b) for b in range(256)]
_LONG = {b: _ITEMS if b in (0xDC, 0xDD) else _PAIRS if b in (0xDE, 0xDF) else _BYTES
         for b in range(256) if _SHORT[b][1] == _LEN}


class Throttle:
    """At most ``burst`` lines per ``window`` seconds; ``allow()`` says whether to write one,
    and the first line of a new window learns how many were left out (``dropped``). Pure:
    time comes from the ``clock`` given."""

    __slots__ = ("burst", "window", "_clock", "_start", "_used", "dropped")

    def __init__(self, burst: int, window: float, clock) -> None:
        self.burst, self.window, self._clock = burst, window, clock
        self._start = float("-inf")
        self._used = 0
        self.dropped = 0  # left out since the last line written

    def allow(self) -> int | None:
        """None: leave this line out. Otherwise write it, adding the count returned (lines
        left out before it, 0 for none)."""
        now = self._clock()
        if now - self._start >= self.window:
            self._start, self._used = now, 0
        if self._used >= self.burst:
            self.dropped += 1
            return None
        self._used += 1
        dropped, self.dropped = self.dropped, 0
        return dropped


class Deadlines:
    """Futures failed at their deadline unless done by then, watched in deadline order (every
    call waits as long, so the order made): one ``clock`` timer, at the oldest deadline,
    instead of one per call. ``error(what)`` is the exception a future gets. Each ``watch``
    first drops the answered calls at the head (O(1) amortised), so the queue holds the
    calls in flight, and at most those of one timeout behind a slow one."""

    __slots__ = ("_clock", "_error", "_queue", "_timer")

    def __init__(self, clock, error: Callable[[str], BaseException]) -> None:
        self._clock, self._error = clock, error
        self._queue: deque[tuple[float, asyncio.Future, str]] = deque()
        self._timer = None

    def __len__(self) -> int:
        return len(self._queue)

    def watch(self, deadline: float, fut: asyncio.Future, what: str) -> None:
        queue = self._queue
        while queue and queue[0][1].done():
            queue.popleft()
        queue.append((deadline, fut, what))
        if self._timer is None:
            self._timer = self._clock.call_later(deadline - self._clock(), self._due)

    def _due(self) -> None:
        queue, now = self._queue, self._clock()
        while queue and (queue[0][1].done() or queue[0][0] <= now):
            _, fut, what = queue.popleft()
            if not fut.done():
                fut.set_exception(self._error(what))
        self._timer = self._clock.call_later(queue[0][0] - now, self._due) if queue else None

    def clear(self) -> None:
        """Stop watching (the futures are failed or answered elsewhere)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


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
