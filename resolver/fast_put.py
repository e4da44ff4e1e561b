"""The single registration (``PUT /api/handles/<handle>``) answered below aiohttp's
per-request machinery, on ``resolver.fast_http``'s connections.

``Puts.of(api)`` is made once per server (``FastServer.puts``) for a ``web.NodeAPI`` whose
PUT is ``web.put_handle`` (a secondary or top-level node; not a recursive node, which
forwards writes, nor a mirror, which refuses them); ``[http] fast_path`` switches it with
the GET's. ``FastHandler._answer`` hands it a chunk starting ``PUT ``; ``take`` answers it
and returns True, or returns False (aiohttp's, then; a chunk that may not be one whole
request makes the connection aiohttp's for good, as ``fast_http`` does). It takes a chunk
only when ALL of these hold:

* the chunk is exactly one whole request: ``PUT /api/handles/<text>?overwrite=true|false
  HTTP/1.1`` (``<text>`` of RFC 3986 path characters without ``%``, ``?``, ``#`` or a dot
  segment), a well-formed head (``fast_http``'s rules: CRLF line ends, token names,
  printable values, at most ``max_headers`` lines), then exactly Content-Length bytes;
* the head has one valid ``Host``, one ``Content-Type: application/json``, one
  ``Content-Length`` (digits, 1 to ``[http] max_body``), at most one ``Authorization``, no
  ``Transfer-Encoding``, ``Expect``, ``Upgrade``, no ``Connection`` but keep-alive, and no
  ``msgpack`` anywhere (the answer would be msgpack);
* the connection is idle in aiohttp's terms (``FastHandler``'s checks) and ``_begin``
  takes it.

Then it does what ``web.put_handle`` does with such a request, through the same functions
(``node.parse``, ``http_input.identity_from``, ``http_input.parse_json``,
``writes.put_document``: every check, the failed-login limits, the durable commit) and sends
the bytes aiohttp would send: ``answer``'s 201/200, or ``error_answer``'s Handle-shaped error
(with ``NodeAPI.dispatch``'s rule naming the handle), rendered as aiohttp renders a
``web.Response`` (status line, its headers in order, Content-Length, Date, Server). The
metrics' ``register`` op counts it as ``NodeAPI.__call__`` does. The answer is written by
``FastHandler._finish`` once the write is durable (acknowledgement rule unchanged); bytes that
arrive meanwhile wait there, so answers keep their order.
"""
from __future__ import annotations

import asyncio
import logging
import re
from time import perf_counter

import orjson

from resolver import errors, metrics
from resolver.fast_http import _HOST_OK, _SERVER, _date, _value
from resolver.http_input import HANDLES, identity_from, parse_json
from resolver.http_output import error_answer
from resolver.writes import put_document

log = logging.getLogger("idsim.web")  # NodeAPI.dispatch's logger: an unexpected error

_PUT = re.compile(  # one PUT head of a handle with ?overwrite=; the body follows it
    rb"PUT (/api/handles/[A-Za-z0-9\-._~!$&'()*+,;=:@/]+)\?overwrite=(true|false) HTTP/1\.1"
    rb"((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*)*)\r\n\r\n")
_DONE = {True: b"HTTP/1.1 201 Created\r\n", False: b"HTTP/1.1 200 OK\r\n"}
_JSON_REST = (b"Content-Type: application/json;charset=utf-8\r\nContent-Length: %d\r\n"
              b"Date: %s\r\nServer: %s\r\n\r\n")


class _Plain:
    """What ``http_output.answer`` reads of a request taken here: no Accept, no query."""
    headers: dict = {}
    query: dict = {}


class Puts:
    """The PUT fast path of one ``NodeAPI`` (module docstring)."""

    def __init__(self, api) -> None:
        self.api = api
        self.node = api.node
        self.max_body = self.node.config.http.max_body
        self.op = api.handle_ops["PUT"] if api.metrics is not None else None
        self.running: set[asyncio.Task] = set()  # answers in progress (held, not collected)

    @classmethod
    def of(cls, api) -> "Puts | None":
        """The fast path of ``api`` when it answers a PUT with ``web.put_handle``, else None."""
        from resolver.web import put_handle  # web imports fast_http, which imports this
        return cls(api) if api.handle_methods.get("PUT") is put_handle else None

    def take(self, conn, data: bytes) -> bool:
        """Answer ``data`` on ``conn`` (a ``FastHandler``) and return True, or return False."""
        if not conn.idle():
            return False
        m = _PUT.match(data)
        body = data[m.end():] if m is not None else b""
        lower = m.group(3).lower() if m is not None else b""
        length = _value(lower, b"content-length")
        if (m is None or length is None or not length.isdigit() or int(length) != len(body)
                or b"\r\ntransfer-encoding:" in lower):
            conn._fast = None  # maybe not one whole request: aiohttp's from now on, as GETs
            return False
        target, overwrite, headers = m.groups()
        if (not body or len(body) > self.max_body or m.end() > conn._limit or b"/." in target
                or _value(lower, b"content-type") != b"application/json"
                or b"\r\nexpect:" in lower or b"\r\nupgrade:" in lower or b"msgpack" in lower
                or lower.count(b"\r\n") > conn.max_headers):
            return False
        host = _value(lower, b"host")
        if host is None or not _HOST_OK.fullmatch(host) or (
                b"\r\nconnection:" in lower and _value(lower, b"connection") != b"keep-alive"):
            return False
        at = lower.find(b"\r\nauthorization:")
        creds = None
        if at >= 0:
            if lower.find(b"\r\nauthorization:", at + 1) >= 0:
                return False
            start = at + len(b"\r\nauthorization:")
            end = headers.find(b"\r\n", start)
            creds = headers[start:end if end >= 0 else len(headers)].strip(b" \t").decode()
        peer = conn.transport.get_extra_info("peername")  # as aiohttp's request.remote
        peer = None if peer is None else str(peer[0] if isinstance(peer, (list, tuple)) else peer)
        conn._begin(data)
        task = asyncio.ensure_future(self._answer(conn, target[len(HANDLES):].decode(), creds,
                                                  peer, overwrite == b"true", body))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return True

    async def _answer(self, conn, text: str, creds: str | None, peer: str | None,
                      overwrite: bool, body: bytes) -> None:
        start = perf_counter()
        node = self.node
        try:
            handle = node.parse(text)
            identity = identity_from(node, creds, False, peer)
            created = await put_document(node, handle, identity, parse_json(body),
                                         overwrite=overwrite, indexes=None)
            out = orjson.dumps({"responseCode": errors.SUCCESS, "handle": handle.text})
            wire = _DONE[created] + _JSON_REST % (len(out), _date().encode(), _SERVER) + out
            code = errors.SUCCESS
        except errors.HandleError as exc:
            if exc.handle is None and exc.code != errors.PROTOCOL_ERROR:
                exc.handle = text  # NodeAPI.dispatch's rule (the path has no '%' here)
            wire, code = _rendered(error_answer(_Plain, exc))
        except Exception:  # a bug: said in the protocol's terms and logged, as dispatch does
            log.exception("unhandled error on PUT %s%s", HANDLES, text)
            wire, code = _rendered(error_answer(_Plain, errors.HandleError(
                errors.ERROR, "internal server error")))
        if self.op is not None:
            self.op.observe(code, perf_counter() - start)
        conn._finish(wire)


def _rendered(resp) -> tuple[bytes, int]:
    """The bytes aiohttp sends for ``resp`` (a ``web.Response`` with a body, on a keep-alive
    HTTP/1.1 connection) and its metrics code."""
    body = resp.body
    head = [f"HTTP/1.1 {resp.status} {resp.reason}"]
    head += [f"{k}: {v}" for k, v in resp.headers.items()]
    head += [f"Content-Length: {len(body)}", f"Date: {_date()}"]
    return ("\r\n".join(head).encode() + b"\r\nServer: " + _SERVER + b"\r\n\r\n" + body,
            resp.get(metrics.CODE, 1))
