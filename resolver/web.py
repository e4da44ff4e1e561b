"""The Handle REST API over aiohttp: ``NodeAPI(node)``, a low-level request handler
with its router, and the handlers of one handle (``/api/handles/{handle}``, ``/{handle}``);
the other endpoints' handlers are ``resolver.web_admin``, the answers ``resolver.http_output``.

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

from aiohttp import web

from resolver import dashboard, errors, health, metrics, openapi, records
from resolver.http_input import (HANDLES, MSGPACK, flag, handle_text, identity_of, int_params,
                                 json_body, parse_lookup, read_body)
from resolver.http_output import answer, error_answer, record_json
from resolver.mirror import refuse_write
from resolver.roles import Role
from resolver.web_admin import (ask_serving_node, batch_register, batch_resolve, create_prefix,
                                list_handles, list_prefixes, stats, write_elsewhere)
from resolver.writes import put_document

log = logging.getLogger("idsim.web")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL_SAFE = "%:/?#[]@!$&'()*+,;=-._~"  # RFC 3986 reserved + unreserved (with letters, digits)


# ------------------------------------------------------------------ answers

# ------------------------------------------------------------------ handlers

async def get_handle(node, request: web.BaseRequest) -> web.Response:
    text = handle_text(request)
    plain = not request.query_string and "Authorization" not in request.headers
    as_json = MSGPACK not in request.headers.get("Accept", "")
    if plain and as_json:
        ans = node.cached(text)  # the warm path: a recursive node's cache, a secondary's answers
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
    created = await put_document(node, handle, identity, doc, overwrite=overwrite,
                                 indexes=indexes or None)
    return answer(request, {"responseCode": errors.SUCCESS, "handle": handle.text},
                  201 if created else 200)


async def delete_handle(node, request: web.BaseRequest) -> web.Response:
    handle = node.parse(handle_text(request))
    await node.delete(handle, identity=identity_of(node, request),
                      indexes=int_params(request, "index") or None)
    return answer(request, {"responseCode": errors.SUCCESS, "handle": handle.text})


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
        if node.role == Role.MIRROR:  # a mirror refuses every write, naming its primary
            self.handle_methods.update(PUT=refuse_write, DELETE=refuse_write)
            self.exact.update({p: {"POST": refuse_write} for p in ("/api/batch/register",
                                                                   "/api/admin/prefixes")})
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
