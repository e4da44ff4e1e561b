"""Reading a Handle REST request: the handle in its path, query parameters, credentials, body.

Each helper takes the raw aiohttp request and returns plain values, or raises
``errors.HandleError`` in Handle's terms (responseCode 4 or 102, 401/403 for credentials,
429 once failed logins are over the limit (``resolver.ratelimit``), 413 for a body over the
limit, 408 for one that does not arrive in time): nothing a client sends makes these raise
anything else. Query integers are 32-bit, as Handle.Net reads them. The body limits come from the caller's
``HttpConfig``; there are no defaults here. No state, no writes.
"""
from __future__ import annotations

import asyncio
from urllib.parse import unquote

import msgpack
import orjson
from aiohttp import web

from resolver import auth, errors, tls
from resolver.config import HttpConfig

HANDLES = "/api/handles/"
MSGPACK = "application/msgpack"
_HEX = frozenset("0123456789abcdefABCDEF")
INT_MIN, INT_MAX = -2**31, 2**31 - 1  # what Handle.Net (Java) reads a query integer as


def handle_text(request: web.BaseRequest) -> str:
    """The handle from the raw path, percent-decoded once (``%2F`` counts as ``/``)."""
    return decode_handle(request.raw_path.split("?", 1)[0][len(HANDLES):])


def decode_handle(raw: str) -> str:
    """The handle from the raw path after ``/api/handles/`` (``handle_text``; the fast path
    ``resolver.fast_http`` reads it the same way)."""
    if "%" in raw:
        try:
            raw = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise errors.HandleError(errors.INVALID_HANDLE, "handle is not valid UTF-8") from None
        if _bad_percent(raw):
            raise errors.HandleError(errors.INVALID_HANDLE, "bad percent-encoding in handle")
    if not raw:
        raise errors.HandleError(errors.INVALID_HANDLE, "Empty handle invalid")
    return raw


def _bad_percent(text: str) -> bool:
    """True if a '%' that ``unquote`` left in place is not followed by two hex digits."""
    i = text.find("%")
    while i != -1:
        part = text[i + 1:i + 3]
        if len(part) < 2 or not _HEX.issuperset(part):
            return True
        i = text.find("%", i + 1)
    return False


def int_params(request: web.BaseRequest, name: str) -> set[int]:
    """Every ``?name=`` value as an integer (``?index=1&index=2``); responseCode 4 if one is
    not, or is outside a 32-bit int (as Handle.Net's ``Integer.parseInt`` refuses it)."""
    out = set()
    for raw in request.query.getall(name, ()):
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not INT_MIN <= value <= INT_MAX:
            raise errors.HandleError(errors.PROTOCOL_ERROR, f"{name} must be an integer from "
                                     f"{INT_MIN} to {INT_MAX}; got {raw[:40]!r}")
        out.add(value)
    return out


def int_param(request: web.BaseRequest, name: str, default: int) -> int:
    """One integer ``?name=`` value (any of them if repeated), or ``default`` when absent."""
    values = int_params(request, name)
    return next(iter(values)) if values else default


def flag(request: web.BaseRequest, name: str, default: bool) -> bool:
    """A boolean ``?name=``: bare, true/1/yes or false/0/no; responseCode 4 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in ("", "true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise errors.HandleError(errors.PROTOCOL_ERROR, f"{name} must be true or false; got {raw[:40]!r}")


def identity_of(node, request: web.BaseRequest) -> auth.Identity | None:
    """The verified caller, None when anonymous (no credentials, or Basic sent in plain text
    from another host: ``resolver.tls``); HandleError 401 for bad credentials, and
    429 (``ratelimit.RateLimited``) once the client's address, or this identity from it, has
    failed too often (``node.logins``: a node that checks no secrets has none)."""
    return identity_from(node, request.headers.get("Authorization"), request.secure,
                         request.remote)


def identity_from(node, header: str | None, secure: bool,
                  remote: str | None) -> auth.Identity | None:
    """``identity_of`` from the request's parts: its Authorization header, whether it came
    over TLS, the peer's address (the PUT fast path, ``resolver.fast_put``, has no request)."""
    creds = auth.parse_basic(header)
    if creds is None:
        return None
    if not _credentials_count(secure, remote, node.config.http):
        return None  # plain text from another host: anonymous, as Handle.Net (resolver.tls)
    limits = getattr(node, "logins", None)
    if limits is None:
        return node.authenticate(*creds)
    identity, address = creds[0], remote or ""
    limits.check(identity, address)
    try:
        verified = node.authenticate(*creds)
    except errors.HandleError as exc:
        if exc.code == errors.AUTHENTICATION_FAILED:
            limits.failed(identity, address)
        raise
    limits.succeeded(identity, address)
    return verified


def _credentials_count(secure: bool, peer: str | None, config: HttpConfig) -> bool:
    """``tls.credentials_count``, its answer for a plain-text peer remembered (parsing the
    address cost ~4 µs a request): at most ``_PEERS_MAX`` peers, forgotten all at once."""
    if secure or config.plain_auth_remote:
        return tls.credentials_count(secure, peer, config)
    known = _PEERS.get(peer)
    if known is None:
        if len(_PEERS) >= _PEERS_MAX:
            _PEERS.clear()
        known = _PEERS[peer] = tls.credentials_count(False, peer, config)
    return known


_PEERS: dict[str | None, bool] = {}  # peer address -> whether plain-text credentials count
_PEERS_MAX = 4096  # bounded whatever the number of clients (protocol plumbing, not tuning)


async def json_body(request: web.BaseRequest, limits: HttpConfig):
    """The body decoded as JSON (or msgpack, by its Content-Type); responseCode 4 if it is not."""
    ctype = request.content_type
    if not request.body_exists:
        raise errors.HandleError(errors.PROTOCOL_ERROR, "request body is empty")
    body = await read_body(request, limits)
    if ctype == MSGPACK:
        try:
            return msgpack.unpackb(body, raw=False)
        except Exception:
            raise errors.HandleError(errors.PROTOCOL_ERROR, "body is not valid msgpack") from None
    if ctype not in ("application/json", "text/json", "application/octet-stream", ""):
        raise errors.HandleError(errors.PROTOCOL_ERROR, f"Unsupported media type {ctype}")
    return parse_json(body)


def parse_json(body: bytes):
    """A JSON body decoded; responseCode 4 if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.HandleError(errors.PROTOCOL_ERROR, f"body is not valid JSON: {exc}") from None


async def read_body(request: web.BaseRequest, limits: HttpConfig) -> bytes:
    """The whole body, at most ``limits.max_body`` bytes, within ``limits.body_timeout`` s."""
    max_body, timeout = limits.max_body, limits.body_timeout
    too_big = errors.HandleError(errors.PROTOCOL_ERROR,
                                 f"request body larger than {max_body} bytes", status=413)
    length = request.content_length
    if length is not None and length > max_body:
        raise too_big
    content = request.content
    if length is not None and content.is_eof():  # all of it arrived with the headers: no wait,
        body = content.read_nowait(length)       # so no timer (~5 µs of a registration)
        if len(body) != length:
            raise errors.HandleError(errors.PROTOCOL_ERROR, "request body ended early")
        return body
    try:
        async with asyncio.timeout(timeout):  # a body that trickles in holds no handler
            if length is not None:  # one read of a known size: no wait for a separate end
                body = await request.content.readexactly(length)
            else:  # chunked: read up to the limit
                body = bytearray()
                while chunk := await request.content.read(2**16):
                    body += chunk
                    if len(body) > max_body:
                        raise too_big
    except asyncio.IncompleteReadError:
        raise errors.HandleError(errors.PROTOCOL_ERROR, "request body ended early") from None
    except TimeoutError:
        raise errors.HandleError(errors.PROTOCOL_ERROR, f"request body not received within "
                                 f"{timeout:g} s", status=408) from None
    return bytes(body)


def parse_lookup(node, text: str):
    """The handle a lookup (GET or batch resolve) asks for. A text with no '/' is answered
    as Handle.Net 9.3.1 answers it (``shared/reference``): 400 / 301 "That prefix doesn't
    live here" (it names no handle, only something like a prefix), in both alike."""
    try:
        return node.parse(text)
    except errors.HandleError as exc:
        if "/" not in text and exc.code == errors.INVALID_HANDLE and text:
            raise errors.HandleError(errors.SERVER_NOT_RESP, "That prefix doesn't live here",
                                     handle=text) from None
        raise
