"""The Handle REST API over aiohttp: ``NodeAPI(node)``, a low-level request handler
with its router, and one handler per endpoint; no globals.

Shapes, statuses and codes follow Handle.Net 9.3.1 as recorded in ``shared/reference``.
Every answer that is not a success is Handle-shaped JSON (responseCode, message, handle);
nothing a client sends can produce a 500. ``Accept: application/msgpack`` gets the same
documents as msgpack. Reading the request (path, query, credentials, body) is
``resolver.http_input``; every limit comes from the node's ``Config`` (``node.config``).
The warm GET of a recursive node (``NodeAPI.__call__`` -> ``get_handle`` -> ``node.cached``
-> ``record_json``) is the hot path: keep it free of extra calls and lookups.
``NodeAPI.__call__`` counts every request for ``GET /metrics`` (``resolver.metrics``): plain
integer increments around ``NodeAPI.dispatch``; an answer that is not responseCode 1 carries
its code on the response (``metrics.CODE``), set by ``answer`` and ``forward_write``.
"""
from __future__ import annotations

import html
import logging
import re
from time import perf_counter
from urllib.parse import quote, unquote

import msgpack
import orjson
from aiohttp import web

from resolver import dashboard, errors, health, identifiers, metrics, openapi, records
from resolver.http_input import (HANDLES, MSGPACK, flag, handle_text, identity_of, int_param,
                                 int_params, json_body, read_body)
from resolver.nodes import STATS_NOTES  # /api/stats says what its counters count
from resolver.roles import Role

log = logging.getLogger("idsim.web")

JSON = "application/json;charset=utf-8"
JSON_HEADERS = {"Content-Type": JSON}
MAX_SECRET = 1024  # characters of a secret chosen at prefix allocation (protocol data, not tuning)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL_SAFE = "%:/?#[]@!$&'()*+,;=-._~"  # RFC 3986 reserved + unreserved (with letters, digits)


# ------------------------------------------------------------------ answers

def answer(request: web.BaseRequest, doc: dict, status: int = 200) -> web.Response:
    if MSGPACK in request.headers.get("Accept", ""):
        resp = web.Response(body=msgpack.packb(doc, use_bin_type=True), status=status,
                            headers={"Content-Type": MSGPACK})
    else:
        pretty = request.query.get("pretty")  # lenient: error answers go through here too
        opts = orjson.OPT_INDENT_2 if pretty is not None and pretty.lower() not in (
            "false", "0", "no") else 0
        resp = web.Response(body=orjson.dumps(doc, option=opts), status=status,
                            headers={"Content-Type": JSON})
    if (code := doc.get("responseCode")) != errors.SUCCESS:
        resp[metrics.CODE] = code  # for the metrics (NodeAPI.__call__); success: untagged
    return resp


def error_answer(request: web.BaseRequest, exc: errors.HandleError) -> web.Response:
    resp = answer(request, exc.body(), exc.status)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="handle"'
    elif exc.status == 429:  # too many failed logins (resolver.ratelimit.RateLimited)
        resp.headers["Retry-After"] = str(getattr(exc, "retry_after", 1))
    return resp


# ------------------------------------------------------------------ handlers

def record_json(text: str, ans: records.Answer) -> web.Response:
    """The anonymous, unfiltered answer: bytes joined around the values rendered once."""
    return web.Response(body=b'{"responseCode":1,"handle":' + orjson.dumps(text) +
                        b',"values":' + ans.public_json + b'}', headers=JSON_HEADERS)


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


async def get_handle(node, request: web.BaseRequest) -> web.Response:
    text = handle_text(request)
    plain = not request.query_string and "Authorization" not in request.headers
    as_json = MSGPACK not in request.headers.get("Accept", "")
    if plain and as_json:
        ans = node.cached(text)  # the warm path of a recursive node
        if ans is not None:
            return record_json(text, ans)
    handle = parse_lookup(node, text)
    if plain:
        ans = await node.resolve(handle, fresh=False)
        if as_json:
            return record_json(text, ans)
        return answer(request, {"responseCode": errors.SUCCESS, "handle": text,
                                "values": records.rest_values(ans.rows)})
    types = request.query.getall("type", ())
    indexes = int_params(request, "index")
    fresh = flag(request, "auth", False)
    identity = identity_of(node, request) if "Authorization" in request.headers else None
    rows = (await node.resolve(handle, fresh=fresh)).rows
    authorised = identity is not None and node.may_read_hidden(identity, handle, rows)
    values = records.rest_values(rows, types=types, indexes=indexes, authorised=authorised)
    if not values and (types or indexes):
        return answer(request, {"responseCode": errors.VALUES_NOT_FOUND, "values": [],
                                "handle": text})
    return answer(request, {"responseCode": errors.SUCCESS, "handle": text, "values": values})


async def put_handle(node, request: web.BaseRequest) -> web.Response:
    handle = node.parse(handle_text(request))
    identity = identity_of(node, request)
    overwrite = flag(request, "overwrite", True)
    indexes = int_params(request, "index")
    doc = await json_body(request, node.config.http)
    try:
        values = records.values_from_json(doc, now=int(node.clock()),
                                          max_data=node.config.http.max_value_data)
    except errors.HandleError as exc:
        raise exc.with_handle(handle.text) from None
    if handle.is_prefix_handle and node.store.get(handle.key) is None:
        raise not_allocated(handle.text)
    created = await node.put(handle, values, identity=identity, overwrite=overwrite,
                             indexes=indexes or None)
    return answer(request, {"responseCode": errors.SUCCESS, "handle": handle.text},
                  201 if created else 200)


async def delete_handle(node, request: web.BaseRequest) -> web.Response:
    handle = node.parse(handle_text(request))
    await node.delete(handle, identity=identity_of(node, request),
                      indexes=int_params(request, "index") or None)
    return answer(request, {"responseCode": errors.SUCCESS, "handle": handle.text})


async def list_handles(node, request: web.BaseRequest) -> web.Response:
    prefix = request.query.get("prefix", "")
    if not prefix:
        raise errors.HandleError(errors.PROTOCOL_ERROR, "prefix is required: ?prefix=88.118.8")
    identity = identity_of(node, request)
    if identity is None:
        raise errors.HandleError(errors.AUTHENTICATION_NEEDED, "Authentication needed",
                                 handle=prefix)
    if not node.homes(prefix):
        raise errors.HandleError(errors.SERVER_NOT_RESP, "That prefix doesn't live here",
                                 handle=prefix)
    if not node.administers(identity, prefix):
        raise errors.HandleError(errors.INSUFFICIENT_PERMISSIONS,
                                 f"{identity} may not list {prefix}", handle=prefix)
    http = node.config.http
    page = max(0, min(int_param(request, "page", 0), http.max_page))
    size = max(1, min(int_param(request, "pageSize", http.page_size), http.max_page_size))
    total, handles = node.list_handles(prefix, page, size)
    return answer(request, {"responseCode": errors.SUCCESS, "prefix": prefix,
                            "totalCount": str(total), "page": page, "pageSize": size,
                            "handles": handles})


async def list_prefixes(node, request: web.BaseRequest) -> web.Response:
    identity = identity_of(node, request)
    if identity is None:
        raise errors.HandleError(errors.AUTHENTICATION_NEEDED, "Authentication needed")
    prefixes = [g.decode() for g, _ in node.store.groups()
                if g.upper() != b"0.NA" and node.administers(identity, g.decode())]
    return answer(request, {"responseCode": errors.SUCCESS, "prefixes": sorted(prefixes)})


async def create_prefix(node, request: web.BaseRequest) -> web.Response:
    """Admin API: allocate an enterprise prefix and its owner login.

    Body ``{"prefix": "88.118.9", "secret": optional}``; the caller must administer a
    prefix above it (the node admin, ``300:0.NA/88.118``). The secret is shown once.
    """
    identity = identity_of(node, request)
    doc = await json_body(request, node.config.http)
    if not isinstance(doc, dict) or not isinstance(doc.get("prefix"), str):
        raise errors.HandleError(errors.INVALID_VALUE, 'body must be {"prefix": "88.118.9"}')
    secret = doc.get("secret")
    if secret is not None and (not isinstance(secret, str) or not 8 <= len(secret) <= MAX_SECRET):
        raise errors.HandleError(errors.INVALID_VALUE,
                                 f"secret must be a string of 8 to {MAX_SECRET} characters")
    creds = await node.create_prefix(doc["prefix"], identity=identity, secret=secret)
    return answer(request, {"responseCode": errors.SUCCESS, "prefix": creds.prefix,
                            "handle": f"0.NA/{creds.prefix}", "username": creds.username,
                            "secret": creds.secret}, 201)


async def batch_register(node, request: web.BaseRequest) -> web.Response:
    """``{"overwrite": false, "handles": [{"handle": h, "values": [...]}, ...]}``."""
    identity = identity_of(node, request)
    doc = await json_body(request, node.config.http)
    items = doc.get("handles") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise errors.HandleError(errors.INVALID_VALUE,
                                 'body must be {"handles": [{"handle": ..., "values": [...]}]}')
    overwrite = doc.get("overwrite", False) is True
    prefixes = {n for n, i in enumerate(items) if is_prefix_text(node, i.get("handle"))}
    done = iter(await node.register_many(
        [(i.get("handle"), {"values": i.get("values")}) for n, i in enumerate(items)
         if n not in prefixes], identity=identity, overwrite=overwrite))
    results = [not_allocated(str(i.get("handle"))).body() if n in prefixes else next(done)
               for n, i in enumerate(items)]
    ok = sum(r["responseCode"] == errors.SUCCESS for r in results)
    return answer(request, {"responseCode": errors.SUCCESS, "registered": ok,
                            "failed": len(results) - ok, "results": results})


def not_allocated(text: str) -> errors.HandleError:
    """A prefix record (``0.NA/<prefix>``) is created by the admin API only, which also tells
    the top-level node where the prefix lives; writes may replace an existing one."""
    return errors.HandleError(errors.INVALID_VALUE, "a prefix is allocated with POST "
                              "/api/admin/prefixes, not written as a handle", handle=text)


def is_prefix_text(node, text) -> bool:
    """Whether a batch item names a prefix record (``0.NA/...``); unparsable text is not."""
    try:
        return isinstance(text, str) and node.parse(text).is_prefix_handle
    except errors.HandleError:
        return False


async def batch_resolve(node, request: web.BaseRequest) -> web.Response:
    """``{"handles": [h, ...]}`` → one resolve answer per handle, in order."""
    doc = await json_body(request, node.config.http)
    items = doc.get("handles") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise errors.HandleError(errors.INVALID_VALUE, 'body must be {"handles": [...]}')
    if len(items) > (limit := node.config.batch.max_resolve):
        raise errors.HandleError(errors.INVALID_VALUE, f"a batch resolves at most "
                                 f"{limit} identifiers; got {len(items)}", status=413)
    results = []
    for text in items:
        try:
            if not isinstance(text, str):
                raise errors.HandleError(errors.INVALID_HANDLE, "handle must be a string")
            ans = await node.resolve(parse_lookup(node, text), fresh=False)
            results.append({"responseCode": errors.SUCCESS, "handle": text,
                            "values": records.rest_values(ans.rows)})
        except errors.HandleError as exc:
            results.append(exc.with_handle(str(text)).body())
    return answer(request, {"responseCode": errors.SUCCESS, "results": results})


async def redirect(node, request: web.BaseRequest) -> web.Response:
    """``GET /88.118.8/SN-1`` (no /api): 302 to the record's first URL, as Handle proxies do."""
    text = unquote(request.raw_path.split("?", 1)[0][1:])
    handle = node.parse(text)
    rows = (await node.resolve(handle, fresh=False)).rows
    url = next((r[3] for r in rows if r[1].upper() == "URL" and r[6] & records.PUBLIC_READ
                and isinstance(r[3], str) and not _CONTROL.search(r[3])), None)
    if url is None:
        raise errors.HandleError(errors.VALUES_NOT_FOUND, "handle has no URL value to redirect to",
                                 handle=text, status=404)
    url = location(url)
    link = html.escape(url, quote=True)
    page = f'<html><head><title>Handle Redirect</title></head>\n<body><a href="{link}">{link}</a></body></html>'
    return web.Response(status=302, headers={"Location": url, "Content-Type": "text/html;charset=utf-8"},
                        text=page)


def location(url: str) -> str:
    """``url`` as RFC 3986 allows it in a ``Location`` header: every character other than
    unreserved and reserved ones percent-encoded as UTF-8 (non-ASCII, spaces, U+2028...);
    valid ``%XX`` escapes are kept, a ``%`` that starts none becomes ``%25``."""
    return quote(_LONE_PERCENT.sub("%25", url), safe=_URL_SAFE, errors="surrogatepass")


async def empty_handle(node, request: web.BaseRequest) -> web.Response:
    raise errors.HandleError(errors.INVALID_HANDLE, "Empty handle invalid")


async def stats(node, request: web.BaseRequest) -> web.Response:
    """The top-level node's network totals and per-node rows; any other node's own counters."""
    if node.role == Role.TOP:
        return answer(request, node.statistics())
    return answer(request, {"responseCode": errors.SUCCESS, "node": node.name,
                            **node.report_stats(), "notes": STATS_NOTES})


async def forward_write(node, request: web.BaseRequest) -> web.Response:
    """PUT or DELETE of a handle at a recursive node: passed to the node that serves it."""
    text = handle_text(request)
    handle = node.parse(text)
    body = await read_body(request, node.config.http) if request.body_exists else None
    headers = {k: request.headers[k] for k in ("Authorization", "Content-Type", "Accept")
               if k in request.headers}
    status, payload, passed = await node.forward(request.method, handle, request.raw_path,
                                                 body, headers)
    resp = web.Response(status=status, body=payload, headers=passed)
    if status >= 300:
        resp[metrics.CODE] = metrics.response_code(payload)  # for the metrics
    return resp


async def write_elsewhere(node, request: web.BaseRequest) -> web.Response:
    """A batch registration sent to a recursive node: its identifiers may live at several
    nodes, so it is refused with the way to do it."""
    raise errors.HandleError(errors.SERVER_NOT_RESP,
                             "a recursive node does not take batch registrations: post them to "
                             "the node serving their prefix (its URL: GET /api/handles/0.NA/"
                             "<prefix> at the top-level node, or idsim status)")


async def ask_serving_node(node, request: web.BaseRequest) -> web.Response:
    """Listing a prefix, allocating one or listing one's own, sent to a recursive node: 400 /
    301 naming the node to ask. Not passed on: each is the administration of one node, done
    with that node's own login (the client needs that node anyway), and a new prefix cannot
    be located before it exists. With ``?prefix=`` the serving node is looked up and named."""
    prefix = request.query.get("prefix", "")
    where = ("the node serving the prefix (its URL: GET /api/handles/0.NA/<prefix> at the "
             "top-level node, or idsim status)")
    if prefix:
        try:
            identifiers.check_prefix(prefix)
            where = f"{(await node.locate(prefix)).http_url}, the node serving {prefix}"
        except errors.HandleError:
            pass
    raise errors.HandleError(errors.SERVER_NOT_RESP, "a recursive node does not administer "
                             f"prefixes: ask {where}", handle=prefix or None)


class NodeAPI:
    """The HTTP face of one node: an aiohttp low-level request handler with a small router.

    aiohttp's low-level ``web.Server`` instead of ``web.Application``: measured here, its
    router, middleware and request class cost ~24 of ~70 µs of server CPU per request on a
    trivial handler. The hot path (GET /api/handles/…) is the first test below.
    """

    def __init__(self, node) -> None:
        self.node = node
        writes = node.role != Role.RECURSIVE
        self.exact = {  # path → {method: handler}
            "/api/handles": {"GET": list_handles if writes else ask_serving_node},
            "/api/handles/": {"GET": empty_handle},
            "/api/batch/resolve": {"POST": batch_resolve},
            "/api/batch/register": {"POST": batch_register if writes else write_elsewhere},
            "/api/stats": {"GET": stats},
            "/api/prefixes": {"GET": list_prefixes if writes else ask_serving_node},
            "/api/admin/prefixes": {"POST": create_prefix if writes else ask_serving_node},
            "/healthz": {"GET": health.healthz, "HEAD": health.healthz},
            "/readyz": {"GET": health.readyz, "HEAD": health.readyz},
            **({} if writes else dashboard.ROUTES),  # the recursive node's dashboard
        }
        self.handle_methods = {"GET": get_handle, "HEAD": get_handle,
                               "PUT": put_handle if writes else forward_write,
                               "DELETE": delete_handle if writes else forward_write}
        # metrics: GET /metrics and each route's op; off with metrics.enabled = 0
        self.metrics = metrics.NodeMetrics(node) if node.config.metrics.enabled else None
        if self.metrics is not None:
            self.exact["/metrics"] = {"GET": self.metrics.page}
            ops = self.metrics.requests.ops
            self.other, self.redirect_op = ops["other"], ops["redirect"]
            self.handle_ops = {"GET": ops["resolve"], "HEAD": ops["resolve"],
                               "PUT": ops["register"], "DELETE": ops["delete"]}
            self.path_ops = {path: ops[op] for path, op in metrics.PATH_OPS.items()}
        # the API description, rendered at its first request from the routes above
        self.exact["/api/openapi.json"] = {"GET": openapi.handler(node.role, self.exact,
                                                                  self.handle_methods)}

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """``dispatch``, counted: one ``OpStats.observe`` (op, responseCode, duration)."""
        if self.metrics is None:
            return await self.dispatch(request)
        start = perf_counter()
        resp = await self.dispatch(request)
        path = request.path
        if path.startswith(HANDLES) and len(path) > len(HANDLES):
            op = self.handle_ops.get(request.method, self.other)
        else:
            op = self.path_ops.get(path)
            if op is None:
                op = (self.redirect_op if not path.startswith("/api/") and path.count("/") > 1
                      else self.other)
        op.observe(resp.get(metrics.CODE, 1) if len(resp) else 1, perf_counter() - start)
        return resp

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            path = request.path
            if path.startswith(HANDLES) and len(path) > len(HANDLES):
                handler = self.handle_methods.get(request.method)
                if handler is None:
                    raise web.HTTPMethodNotAllowed(request.method, list(self.handle_methods))
                return await handler(self.node, request)
            methods = self.exact.get(path)
            if methods:
                handler = methods.get(request.method)
                if handler is None:
                    raise web.HTTPMethodNotAllowed(request.method, list(methods))
                return await handler(self.node, request)
            if path.startswith("/api/") or path.count("/") < 2:
                raise web.HTTPNotFound()
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
            return await redirect(self.node, request)
        except errors.HandleError as exc:
            if exc.handle is None and exc.code != errors.PROTOCOL_ERROR and \
                    request.path.startswith(HANDLES) and len(request.path) > len(HANDLES):
                exc.handle = request.path[len(HANDLES):]
            return error_answer(request, exc)
        except web.HTTPException as exc:
            if exc.status == 404:
                message = f"Unknown HTTP API endpoint {request.method} {request.path}"
            else:
                message = exc.reason
            resp = error_answer(request, errors.HandleError(errors.PROTOCOL_ERROR, message,
                                                            status=exc.status))
            if "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        except Exception:  # a bug: say so in the protocol's terms and log it
            log.exception("unhandled error on %s %s", request.method, request.path_qs)
            return error_answer(request, errors.HandleError(errors.ERROR, "internal server error"))
