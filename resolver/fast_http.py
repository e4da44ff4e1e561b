"""The hot GET answered below aiohttp's per-request machinery, on aiohttp's own connections.

``server_class(handler, config)`` is what ``resolver.server.serve`` builds its ``web.Server``
from: ``FastServer`` when ``handler`` is a ``web.NodeAPI``, ``[http] fast_path`` is on and the
aiohttp internals this module reads are there (else plain ``web.Server``, logged once).
``FastServer`` makes ``FastHandler`` protocols: aiohttp's ``RequestHandler`` with one
override, ``data_received``. A chunk of bytes is answered here, with ONE ``transport.write``
of the bytes aiohttp would send (``record_json``'s status line, headers and body; the Date from
aiohttp's own clock), only when all of these hold:

* the chunk is exactly one complete, well-formed request head (``_HEAD``: CRLF line ends,
  token header names, printable values, nothing after the blank line, one ``Host``) of
  ``GET /api/handles/<text> HTTP/1.1``: no query, no fragment, no dot segment, nothing but
  RFC 3986 path characters; no Authorization, Expect, Upgrade, Transfer-Encoding, no
  Content-Length but 0, no Connection but keep-alive, no ``application/msgpack`` anywhere;
* the connection is idle in aiohttp's terms: nothing queued or handled, its request loop
  waiting for the next request (or not started), no payload parser, not upgraded, not closing,
  its transport not paused for writing, and every byte aiohttp was given ended at a request
  boundary (``_fast`` turns None for good on the first chunk that might not have);
* the node is the one ``NodeAPI`` serves without a fault wrapper (``resolver.fault_inject``
  shadows ``dispatch``), no access log, no TLS (checked once per connection);
* ``node.cached_hit(text)`` (``text`` read as ``http_input.decode_handle`` reads it) has the
  answer: ``cached``'s answer, counted as ``cached`` counts it, where a miss counts, moves and
  stashes nothing (the recursive node's ``_probe``, a cache entry's prefetch), as the chunk
  then goes to aiohttp, whose ``get_handle`` asks ``cached`` itself.

An answer that needs a peer first (the recursive node's miss: ``node.fast_miss``,
``resolver.fast_miss``) is answered later on the same connection: ``_begin`` takes the request
(bytes arriving meanwhile are held, not parsed; past ``HOLD_LIMIT`` reading pauses), then
exactly one of ``_finish(response)`` (write it, count it, then the held bytes are read as if
they had just arrived) or ``_fallback()`` (the request and the held bytes go to aiohttp, which
answers as it always does: a resolve is a read, so asking again is safe). While an answer is
pending the keep-alive timer is off: the connection is not idle. A connection lost meanwhile
drops what was held; the late ``_finish``/``_fallback`` then does nothing.

What aiohttp does per request is done here too: ``Server.requests_count``, the keep-alive
timer (a connection served here is not idle; one that is, is closed after keepalive_timeout),
and the metrics' ``resolve`` op (code 1, the duration), as ``NodeAPI.__call__`` counts it.
Anything else goes to ``RequestHandler.data_received`` unchanged.
"""
from __future__ import annotations

import functools  # fast_put
import logging
import re
from http import HTTPStatus
from time import perf_counter

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from resolver.config import HttpConfig
from resolver.errors import HandleError
from resolver.http_input import HANDLES, MSGPACK, decode_handle
from resolver.http_output import record_body

log = logging.getLogger("idsim.fast_http")

TESTED = ((3, 14), (3, 15))  # aiohttp versions whose internals this reads: [3.14, 3.15)
# the RequestHandler / BaseProtocol attributes read or set here
NEEDS = ("_messages", "_request_in_progress", "_payload_parser", "_upgraded", "_waiter",
         "_request_count", "_close", "_force_close", "_paused", "_keepalive_timeout",
         "_next_keepalive_close_time", "_keepalive_handle", "_process_keepalive", "_manager",
         "_loop", "access_logger", "transport", "max_line_size", "max_field_size",
         "max_headers")

_HEAD = re.compile(  # one request head, nothing after it; group 3 starts with CRLF
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) ([\x21-\x7e]+) HTTP/1\.1"
    rb"((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*)*)\r\n\r\n")
_PATH_OK = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]+")  # no '?', '#', nothing else
_HOST_OK = re.compile(rb"[ \t]*[A-Za-z0-9.\-:\[\]]+[ \t]*")
_PREFIX = HANDLES.encode()
_JSON_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=utf-8\r\n"
              b"Content-Length: %d\r\nDate: %s\r\nServer: %s\r\n\r\n")
_warned: list[str] = []
HOLD_LIMIT = 1 << 16  # bytes held behind a pending answer before reading pauses


def _value(lower: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` if it appears once in ``lower`` (the lowered header
    block, each line after CRLF), stripped; None if absent or repeated."""
    i = lower.find(b"\r\n" + name + b":")
    if i < 0 or lower.find(b"\r\n" + name + b":", i + 1) >= 0:
        return None
    start = i + len(name) + 3
    end = lower.find(b"\r\n", start)
    return lower[start:end if end >= 0 else len(lower)].strip(b" \t")


def _bodiless(lower: bytes) -> bool:
    """True if aiohttp's parser reads this head as a whole request: no body, no upgrade."""
    if b"\r\ntransfer-encoding:" in lower or b"\r\nupgrade:" in lower:
        return False
    return b"\r\ncontent-length:" not in lower or _value(lower, b"content-length") == b"0"


def _plain(lower: bytes, headers: bytes) -> bool:
    """True if the headers ask nothing of the hot GET that aiohttp's path would honour."""
    if (b"\r\nauthorization:" in lower or b"\r\nexpect:" in lower
            or MSGPACK.encode() in headers):
        return False
    host = _value(lower, b"host")
    if host is None or not _HOST_OK.fullmatch(host):
        return False
    return b"\r\nconnection:" not in lower or _value(lower, b"connection") == b"keep-alive"


class FastHandler(RequestHandler):
    """aiohttp's protocol with the hot GET answered in ``data_received`` (module docstring)."""

    __slots__ = ("_fast", "_op", "_limit", "_cached", "_miss", "_request", "_held",
                 "_put")  # fast_put

    def __init__(self, manager: "FastServer", **kw) -> None:
        super().__init__(manager, **kw)
        api = manager.request_handler
        # ``cached`` but silent on a miss (aiohttp's path asks ``cached`` then): no node has
        # it (a TopNode...): no fast path
        self._cached = getattr(api.node, "cached_hit", None)
        self._fast = api if self._cached is not None else None  # None: aiohttp's for good
        self._op = api.handle_ops["GET"] if api.metrics is not None else None
        self._limit = min(self.max_line_size, self.max_field_size)
        self._miss = getattr(api.node, "fast_miss", None)  # answers a miss later, or None
        self._request: bytes | None = None  # the request whose answer is pending (_begin)
        self._held: bytearray | None = None  # what came after it meanwhile
        self._put = manager.puts  # fast_put: PUT of a handle answered here, or None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.access_logger is not None or transport.get_extra_info("sslcontext") is not None:
            self._fast = None

    def data_received(self, data: bytes) -> None:
        held = self._held
        if held is not None:  # an answer is pending: what follows waits behind it
            held += data
            if len(held) > HOLD_LIMIT and self.transport is not None:
                self.transport.pause_reading()
            return
        if self._fast is not None and data and self._answer(data):
            return
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        self._request = self._held = None
        super().connection_lost(exc)

    # ---------------------------------------------------------------- answers given later
    def _begin(self, request: bytes) -> None:
        """``request`` (one whole request, taken off aiohttp's path) is answered later, by
        ``_finish`` or ``_fallback``; until then the connection holds what arrives."""
        self._request, self._held = request, bytearray()
        handle = self._keepalive_handle
        if handle is not None:  # not idle while its answer is pending
            handle.cancel()
            self._keepalive_handle = None

    def _release(self) -> bytes | None:
        """End the pending answer: the bytes held behind it, or None if the connection has
        gone (or nothing was pending)."""
        request, held = self._request, self._held
        self._request = self._held = None
        transport = self.transport
        if request is None or held is None or transport is None or transport.is_closing():
            return None
        if len(held) > HOLD_LIMIT:
            transport.resume_reading()
        return bytes(held)

    def _finish(self, response: bytes) -> None:
        """Send the pending request's answer, then read what came after it."""
        held = self._release()
        if held is None:
            return
        self.transport.write(response)
        self._served()
        if held:
            self.data_received(held)

    def _fallback(self) -> None:
        """Give the pending request, and what came after it, to aiohttp."""
        request = self._request
        held = self._release()
        if held is None:
            return
        if held:  # aiohttp is given bytes that may end anywhere: its own from now on
            self._fast = None
        RequestHandler.data_received(self, request + held)

    def _served(self) -> None:
        """What aiohttp does after each request it answers: the counts, the keep-alive."""
        manager = self._manager
        manager.requests_count += 1
        manager.answered += 1
        loop = self._loop
        close_time = loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)

    def idle(self) -> bool:
        """Whether a request may be answered here now: nothing of aiohttp's in progress on
        the connection, its request loop waiting, no fault active on the node."""
        if (self._messages or self._request_in_progress or self._payload_parser is not None
                or self._upgraded or self._close or self._force_close or self._paused):
            return False
        waiter = self._waiter
        if (waiter is None or waiter.done()) and self._request_count:
            return False  # aiohttp's loop is between requests: let it come back first
        return "dispatch" not in self._fast.__dict__  # else a fault is active on the node

    def _answer(self, data: bytes) -> bool:
        """Answer ``data`` here and return True, or return False (aiohttp's, then)."""
        if self._put is not None and data[:4] == b"PUT ":  # fast_put
            return self._put.take(self, data)  # fast_put
        m = _HEAD.fullmatch(data) if len(data) <= self._limit else None
        if m is None:  # not one whole head: maybe part of one, or several
            self._fast = None
            return False
        method, target, headers = m.groups()
        lower = headers.lower()
        if not _bodiless(lower):
            self._fast = None
            return False
        if (method != b"GET" or not target.startswith(_PREFIX) or len(target) == len(_PREFIX)
                or lower.count(b"\r\n") > self.max_headers
                or not _PATH_OK.fullmatch(target) or b"/." in target or b"%2e" in target
                or b"%2E" in target or not _plain(lower, headers)):
            return False
        if not self.idle():
            return False
        start = perf_counter()
        raw = target[len(_PREFIX):].decode("ascii")
        try:
            text = decode_handle(raw) if "%" in raw else raw
            ans = self._cached(text)
        except Exception:  # noqa: BLE001 - aiohttp's path meets it again and answers it
            return False
        if ans is None:  # a miss: the recursive node may answer it later (_begin)
            return self._miss is not None and self._miss.take(self, text, data, start)
        self.transport.write(json_answer(text, ans))
        self._served()
        if self._op is not None:
            self._op.observe(1, perf_counter() - start)
        return True


def json_answer(text: str, answer) -> bytes:
    """The whole HTTP answer aiohttp sends for an anonymous, unfiltered GET of ``text``."""
    body = record_body(text, answer)
    return _JSON_HEAD % (len(body), _date().encode(), _SERVER) + body


def json_error(exc: HandleError) -> bytes | None:
    """The whole HTTP answer ``NodeAPI`` sends for ``exc`` raised by a plain GET's resolve
    (``http_output.error_answer``), or None for a status whose answer has more headers."""
    if exc.status in (401, 429):
        return None
    body = orjson.dumps(exc.body())
    return (b"HTTP/1.1 %d %s" % (exc.status, HTTPStatus(exc.status).phrase.encode())
            + _JSON_HEAD[len(b"HTTP/1.1 200 OK"):] % (len(body), _date().encode(), _SERVER)
            + body)


class FastServer(web.Server):
    """``web.Server`` whose connections are ``FastHandler``s; ``answered`` counts the
    requests they answered themselves."""

    answered = 0

    @functools.cached_property
    def puts(self):  # fast_put: the PUT fast path of this server's NodeAPI, or None
        from resolver.fast_put import Puts  # it imports this module
        return Puts.of(self.request_handler)  # fast_put

    def __call__(self) -> RequestHandler:
        try:
            return FastHandler(self, loop=self._loop, **self._kwargs)
        except TypeError:  # as aiohttp's own: its fallback for odd keyword arguments
            return super().__call__()


def missing() -> str | None:
    """Why this aiohttp cannot serve the fast path, or None if it can."""
    version = tuple(int(p) for p in re.findall(r"\d+", aiohttp.__version__)[:2])
    if not TESTED[0] <= version < TESTED[1]:
        return f"aiohttp {aiohttp.__version__} is outside the tested range {TESTED}"
    absent = [name for name in NEEDS if not hasattr(RequestHandler, name)]
    if absent:
        return f"aiohttp's RequestHandler lacks {', '.join(absent)}"
    if _date is None:
        return "aiohttp.helpers.rfc822_formatted_time is missing"
    return None


def server_class(handler, config: HttpConfig) -> type[web.Server]:
    """``FastServer`` for a ``NodeAPI`` with ``config.fast_path`` on, if aiohttp allows."""
    from resolver.web import NodeAPI  # web imports this module's neighbours; lazily
    if not config.fast_path or not isinstance(handler, NodeAPI):
        return web.Server
    why = missing()
    if why is not None:
        if why not in _warned:
            _warned.append(why)
            log.warning("HTTP fast path off: %s", why)
        return web.Server
    return FastServer


try:
    from aiohttp.helpers import rfc822_formatted_time as _date
    from aiohttp.http import SERVER_SOFTWARE
    _SERVER = SERVER_SOFTWARE.encode()
except ImportError:  # pragma: no cover - another aiohttp; ``missing`` says so
    _date, _SERVER = None, b""
