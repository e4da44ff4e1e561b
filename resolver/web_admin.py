"""The Handle REST API beyond one handle: listing a prefix, prefixes, allocating a prefix,
batches, statistics, and what a recursive node answers for those it does not serve.

Handlers are ``async (node, request) -> web.Response``, routed by ``resolver.web.NodeAPI``.
Invariants: a prefix record (``0.NA/<prefix>``) is created only by ``create_prefix`` (which
tells the top-level node where it lives), never by a batch item; a batch answers one result
per item, in order, and a bad item fails alone; every limit comes from ``node.config``.
"""
from __future__ import annotations

from aiohttp import web

from resolver import errors, identifiers, records
from resolver.http_input import identity_of, int_param, json_body, parse_lookup
from resolver.http_output import answer
from resolver.nodes import STATS_NOTES  # /api/stats says what its counters count
from resolver.roles import Role

MAX_SECRET = 1024  # characters of a secret chosen at prefix allocation (protocol data, not tuning)


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
    """``{"overwrite": false, "handles": [{"handle": h, "values": [...]}, ...]}``, as JSON or
    as msgpack (``Content-Type: application/msgpack``: the same document, decoded in C, the
    fast way to load many); answered in msgpack with ``Accept: application/msgpack``."""
    identity = identity_of(node, request)
    doc = await json_body(request, node.config.http)
    items = doc.get("handles") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise errors.HandleError(errors.INVALID_VALUE,
                                 'body must be {"handles": [{"handle": ..., "values": [...]}]}')
    overwrite = doc.get("overwrite", False) is True
    results = await node.register_many(  # a list of values as is, anything else as sent
        [(i.get("handle"), v if type(v := i.get("values")) is list else {"values": v})
         for i in items], identity=identity, overwrite=overwrite, prefix_records=False)
    ok = sum(r["responseCode"] == errors.SUCCESS for r in results)
    return answer(request, {"responseCode": errors.SUCCESS, "registered": ok,
                            "failed": len(results) - ok, "results": results})


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


async def stats(node, request: web.BaseRequest) -> web.Response:
    """The top-level node's network totals and per-node rows; any other node's own counters."""
    if node.role == Role.TOP:
        return answer(request, node.statistics())
    return answer(request, {"responseCode": errors.SUCCESS, "node": node.name,
                            **node.report_stats(), "notes": STATS_NOTES})


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
