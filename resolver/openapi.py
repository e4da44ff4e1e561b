"""The OpenAPI 3.1 description of a node's HTTP API, served at ``GET /api/openapi.json``.

Data, not code: ``document(role, routes)`` builds the description of what a node of ``role``
answers, listing only the operations its router (``web.NodeAPI``) serves, so the document
never names a route this build lacks. ``handler(role, exact, handle_methods)`` gives the route
handler; it renders the document once, at its first request (routes added to the table after
it was made are included), and serves the same bytes after.

Invariants: every status and responseCode listed is one ``resolver.web`` can send for that
operation; every answer that is not a success is Handle-shaped (``responseCode``, ``message``,
``handle``; nothing else); the recursive node's differences are in its own operations here
(``_recursive_ops``). Schemathesis checks a live node against it (tests/test_openapi.py).
"""
from __future__ import annotations

from functools import lru_cache

import orjson
from aiohttp import web

from resolver import errors as E
from resolver.records import FORMATS, MAX_INDEX, MAX_VALUES
from resolver.roles import Role

JSON = "application/json"
REF = "#/components/schemas/"
HANDLE_PARAM = "/api/handles/{handle}"
REDIRECT = "/{handle}"

# A handle as the path carries it: prefix, '/', suffix (any text; percent-encoded as needed).
HANDLE_PATTERN = r"^[0-9A-Za-z._-]+/[^\x00-\x1f\x7f]+$"


def ref(name: str) -> dict:
    return {"$ref": REF + name}


def obj(props: dict, required: tuple = (), extra: bool = False) -> dict:
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": extra}


def error(status: int, codes: list[int], text: str) -> dict:
    """A Handle-shaped error answer: responseCode among ``codes``, optional message/handle."""
    shape = {"allOf": [ref("HandleError"), {"properties": {"responseCode": {"enum": codes}}}]}
    out = {"description": text, "content": {JSON: {"schema": shape}}}
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "const": 'Basic realm="handle"'}}}
    return out


def ok(schema: dict, text: str = "success") -> dict:
    return {"description": text, "content": {JSON: {"schema": schema}}}


def body(schema: dict, example=None) -> dict:
    media = {"schema": schema}
    if example is not None:
        media["examples"] = {"demo": {"value": example}}
    return {"required": True, "content": {JSON: media}}


# Answers most operations share (statuses and codes as errors.HTTP_STATUS pairs them).
BAD_REQUEST = error(400, [E.PROTOCOL_ERROR, E.INVALID_HANDLE, E.INVALID_VALUE, E.SERVER_NOT_RESP],
                    "bad request: 4 protocol (bad parameter or body), 102 invalid handle, "
                    "202 invalid value, 301 prefix not served here")
BAD_CREDENTIALS = error(401, [E.AUTHENTICATION_NEEDED, E.AUTHENTICATION_FAILED],
                        "credentials missing (402) or wrong (403)")
FORBIDDEN = error(403, [E.INSUFFICIENT_PERMISSIONS], "the login may not do this (400)")
NOT_FOUND = error(404, [E.HANDLE_NOT_FOUND], "no such handle (100)")
CONFLICT = error(409, [E.HANDLE_ALREADY_EXISTS, E.VALUE_ALREADY_EXISTS], "already exists")
TOO_LARGE = error(413, [E.PROTOCOL_ERROR, E.INVALID_VALUE],
                  "body, value, record or batch over its configured limit")
SLOW_BODY = error(408, [E.PROTOCOL_ERROR], "the body did not arrive in time (http.body_timeout)")
UNAVAILABLE = error(503, [E.SERVER_TOO_BUSY], "a node this one depends on did not answer (3)")
ELSEWHERE = error(400, [E.SERVER_NOT_RESP],
                  "301: a recursive node does not do this; the message names the node to ask")
WRITE_ERRORS = {"400": BAD_REQUEST, "401": BAD_CREDENTIALS, "403": FORBIDDEN,
                "408": SLOW_BODY, "413": TOO_LARGE}

BASIC = [{"basic": []}]
DEMO = "88.118.8/SN000000001"  # the demo data's first identifier (``idsim up``'s preset)
DEMO_VALUES = {"values": [{"index": 1, "type": "URL", "data": {"format": "string",
                                                              "value": "https://ex.com/1"}}]}
BASIC_OR_NONE = [{}, {"basic": []}]


def q(name: str, schema: dict, text: str, required: bool = False, example=None) -> dict:
    out = {"name": name, "in": "query", "required": required, "schema": schema,
           "description": text}
    if example is not None:
        out["examples"] = {"demo": {"value": example}}
    return out


HANDLE_PATH = {"name": "handle", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": HANDLE_PATTERN, "maxLength": 255},
               "description": "prefix/suffix; a '/' may also be sent as %2F",
               "examples": {"demo": {"value": DEMO}}}
INDEX_Q = q("index", {"type": "array", "items": {"type": "integer", "minimum": 1,
                                                  "maximum": MAX_INDEX}},
            "value indexes (repeatable: ?index=1&index=2)")
BOOL = {"type": "boolean"}

SCHEMAS = {
    "HandleError": obj({"responseCode": {"type": "integer"}, "message": {"type": "string"},
                        "handle": {"type": "string"}}, ("responseCode",)),
    "Success": obj({"responseCode": {"const": E.SUCCESS}, "handle": {"type": "string"}},
                   ("responseCode", "handle")),
    "Data": obj({"format": {"enum": list(FORMATS)}, "value": {}}, ("format", "value")),
    "Value": obj({"index": {"type": "integer"}, "type": {"type": "string"},
                  "data": ref("Data"), "ttl": {"type": "integer"},
                  "timestamp": {"type": "string",
                                "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}},
                 ("index", "type", "data", "ttl", "timestamp")),
    "Record": obj({"responseCode": {"const": E.SUCCESS}, "handle": {"type": "string"},
                   "values": {"type": "array", "items": ref("Value")}},
                  ("responseCode", "handle", "values")),
    "NoValues": obj({"responseCode": {"const": E.VALUES_NOT_FOUND},
                     "values": {"type": "array", "maxItems": 0}, "handle": {"type": "string"}},
                    ("responseCode", "values", "handle")),
    "ValueIn": obj({
        "index": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": MAX_INDEX},
                            {"type": "string", "pattern": "^[1-9][0-9]{0,8}$"}]},
        "type": {"type": "string", "minLength": 1, "maxLength": 255,
                 "pattern": r"^[^\x00-\x1f\x7f]+$"},
        "data": {"oneOf": [{"type": "string"}, ref("DataIn")]},
        "ttl": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX},
        "permissions": {"type": "string", "pattern": "^[01]{4}$",
                        "description": "admin read, admin write, public read, public write"},
    }, ("index", "type", "data")),
    "DataIn": {"oneOf": [
        obj({"format": {"const": "string"}, "value": {"type": "string"}}, ("format", "value")),
        obj({"format": {"const": "base64"},
             "value": {"type": "string", "pattern": "^([A-Za-z0-9+/]{4})*$"}}, ("format", "value")),
        obj({"format": {"const": "hex"},
             "value": {"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"}}, ("format", "value")),
        obj({"format": {"const": "admin"}, "value": obj({
            "handle": {"type": "string"},
            "index": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX},
            "permissions": {"type": "string", "pattern": "^[01]{12}$"}}, ("handle",))},
            ("format", "value")),
        obj({"format": {"const": "vlist"}, "value": {"type": "array", "items": obj({
            "handle": {"type": "string"},
            "index": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX}},
            ("handle", "index"))}}, ("format", "value")),
        obj({"format": {"enum": ["site", "key"]}, "value": {"type": "object"}},
            ("format", "value")),
    ]},
    "Values": {"oneOf": [
        obj({"values": {"type": "array", "items": ref("ValueIn"), "minItems": 1,
                        "maxItems": MAX_VALUES}}, ("values",)),
        {"type": "array", "items": ref("ValueIn"), "minItems": 1, "maxItems": MAX_VALUES}]},
    "Listing": obj({"responseCode": {"const": E.SUCCESS}, "prefix": {"type": "string"},
                    "totalCount": {"type": "string", "pattern": "^[0-9]+$"},
                    "page": {"type": "integer", "minimum": 0},
                    "pageSize": {"type": "integer", "minimum": 1},
                    "handles": {"type": "array", "items": {"type": "string"}}},
                   ("responseCode", "prefix", "totalCount", "page", "pageSize", "handles")),
    "Prefixes": obj({"responseCode": {"const": E.SUCCESS},
                     "prefixes": {"type": "array", "items": {"type": "string"}}},
                    ("responseCode", "prefixes")),
    "NewPrefix": obj({"prefix": {"type": "string", "pattern": r"^[0-9A-Za-z_-]+(\.[0-9A-Za-z_-]+)*$",
                                 "maxLength": 200},
                      "secret": {"type": "string", "minLength": 8, "maxLength": 200}}, ("prefix",)),
    "PrefixLogin": obj({"responseCode": {"const": E.SUCCESS}, "prefix": {"type": "string"},
                        "handle": {"type": "string"}, "username": {"type": "string"},
                        "secret": {"type": "string"}},
                       ("responseCode", "prefix", "handle", "username", "secret")),
    "BatchRegister": obj({
        "overwrite": BOOL,
        "handles": {"type": "array", "items": obj({
            "handle": {"type": "string", "pattern": HANDLE_PATTERN, "maxLength": 255},
            "values": {"type": "array", "items": ref("ValueIn"), "minItems": 1}},
            ("handle", "values"))}}, ("handles",)),
    "BatchRegistered": obj({"responseCode": {"const": E.SUCCESS},
                            "registered": {"type": "integer", "minimum": 0},
                            "failed": {"type": "integer", "minimum": 0},
                            "results": {"type": "array", "items": ref("HandleError")}},
                           ("responseCode", "registered", "failed", "results")),
    "BatchResolve": {"oneOf": [
        obj({"handles": {"type": "array", "items": {"type": "string"}}}, ("handles",)),
        {"type": "array", "items": {"type": "string"}}]},
    "BatchResolved": obj({"responseCode": {"const": E.SUCCESS}, "results": {
        "type": "array", "items": {"anyOf": [ref("Record"), ref("HandleError")]}}},
        ("responseCode", "results")),
    "Stats": {"type": "object", "required": ["responseCode"],
              "properties": {"responseCode": {"const": E.SUCCESS}},
              "additionalProperties": True,
              "description": "the top-level node: totals, nodes, recursive; others: node, "
                             "role and their own counters (fields may be added)"},
    "Health": {"type": "object", "additionalProperties": True},
}
SCHEMAS["ValueIn"]["description"] = (
    "a value as clients send it: data is required (a value without it is refused, 202), a type "
    "has no control characters (202); one value's data and a whole record are capped "
    "(configurable; by default 64 KiB and 1 MiB): over a cap, 413 in Handle's shape")


# ------------------------------------------------------------------ operations

def op(summary: str, responses: dict, *, params: list = (), security: list | None = None,
       request: dict | None = None, tag: str = "handles") -> dict:
    out = {"summary": summary, "tags": [tag], "parameters": list(params),
           "responses": responses}
    if security is not None:
        out["security"] = security
    if request is not None:
        out["requestBody"] = request
    return out


def _get_and_head(get: dict) -> dict:
    return {"get": get, "head": _head(get)}


def _head(get: dict) -> dict:
    """HEAD: GET's statuses and headers, no body."""
    out = dict(get, summary="the same as GET, without the body")
    out["responses"] = {s: {"description": r["description"]} for s, r in get["responses"].items()}
    return out


def _handle_ops(recursive: bool) -> dict:
    """``/api/handles/{handle}``; at a recursive node PUT and DELETE are passed on to the
    serving node (whose answer comes back as it was, or 503 if it did not answer)."""
    # passed on: the body is read (limits apply) and the serving node may not answer
    passed = {"408": SLOW_BODY, "413": TOO_LARGE, "503": UNAVAILABLE} if recursive else {}
    get = op("resolve a handle (Handle.Net's JSON, field for field)", {
        "200": ok({"anyOf": [ref("Record"), ref("NoValues")]},
                  "the record; responseCode 200 with no values when ?type=/?index= match none"),
        "400": BAD_REQUEST, "401": BAD_CREDENTIALS, "404": NOT_FOUND, "503": UNAVAILABLE},
        params=[HANDLE_PATH, q("type", {"type": "array", "items": {"type": "string"}},
                               "value types (repeatable); with ?index=, either matches"),
                INDEX_Q, q("pretty", {"type": "string"}, "any value but false/0/no: indented JSON"),
                q("auth", BOOL, "true: bypass every cache (authoritative answer)")],
        security=BASIC_OR_NONE)
    put = op("create (201) or replace (200) a record; with ?index=, only those values", {
        "200": ok(ref("Success"), "replaced"), "201": ok(ref("Success"), "created"),
        **WRITE_ERRORS, "404": error(404, [E.HANDLE_NOT_FOUND], "?index= on a missing handle"),
        "409": CONFLICT, **passed},
        params=[HANDLE_PATH, q("overwrite", BOOL, "false: 409 if the handle (or index) exists"),
                INDEX_Q], security=BASIC, request=body(ref("Values"), DEMO_VALUES))
    delete = op("delete a handle, or with ?index= some of its values", {
        "200": ok(ref("Success"), "deleted"),
        "400": error(400, [E.PROTOCOL_ERROR, E.INVALID_HANDLE, E.VALUES_NOT_FOUND,
                           E.SERVER_NOT_RESP], "bad request; 200: no value at those indexes"),
        "401": BAD_CREDENTIALS, "403": FORBIDDEN, "404": NOT_FOUND, **passed},
        params=[HANDLE_PATH, INDEX_Q], security=BASIC)
    return {"get": get, "head": _head(get), "put": put, "delete": delete}


def _serving_ops() -> dict:
    """Operations a node holding records answers itself (secondary and top-level nodes)."""
    return {
        "/api/handles": {"get": op("list a prefix's handles (its owner or node admin)", {
            "200": ok(ref("Listing")), "400": BAD_REQUEST, "401": BAD_CREDENTIALS,
            "403": FORBIDDEN},
            params=[q("prefix", {"type": "string", "minLength": 1}, "the prefix", True, "88.118.8"),
                    q("page", {"type": "integer"}, "page number from 0 (clamped)"),
                    q("pageSize", {"type": "integer"}, "handles per page (clamped)")],
            security=BASIC)},
        "/api/prefixes": {"get": op("the prefixes this login administers here", {
            "200": ok(ref("Prefixes")), "401": BAD_CREDENTIALS}, security=BASIC, tag="admin")},
        "/api/admin/prefixes": {"post": op("allocate an enterprise prefix and its login", {
            "201": ok(ref("PrefixLogin"), "created; the secret is shown this once"),
            **WRITE_ERRORS, "409": CONFLICT, "503": UNAVAILABLE},
            security=BASIC, request=body(ref("NewPrefix"), {"prefix": "88.118.77"}), tag="admin")},
        "/api/batch/register": {"post": {**op("register many handles in one durable commit", {
            "200": ok(ref("BatchRegistered"), "one result per item, in order"), **WRITE_ERRORS},
            security=BASIC, request=body(ref("BatchRegister"), {"handles": [
                {"handle": "88.118.8/BATCH-1", **DEMO_VALUES}]}), tag="batch"),
            # msgpack batches: the fast way to load many (resolver.writes)
            "description": "The body may also be msgpack (Content-Type: application/msgpack): "
                           "the same document, checked item by item alike; the answer is "
                           "msgpack with Accept: application/msgpack, as on every endpoint."}},
    }


def _recursive_ops() -> dict:
    """At a recursive node the node-administration operations and batch registration are
    refused with 400 / responseCode 301 naming the node to ask (see ``web_admin.ask_serving_node``)."""
    no = {"400": ELSEWHERE}
    return {
        "/api/handles": {"get": op("refused: list at the node serving the prefix", no,
                                   params=[q("prefix", {"type": "string"}, "the prefix")])},
        "/api/prefixes": {"get": op("refused: ask the node you have a login for", no,
                                    tag="admin")},
        "/api/admin/prefixes": {"post": op("refused: allocate at the serving node", no,
                                           request=body(ref("NewPrefix")), tag="admin")},
        "/api/batch/register": {"post": op("refused: a batch may span nodes", no,
                                           request=body(ref("BatchRegister")), tag="batch")},
    }


def _common_ops() -> dict:
    text = lambda t: {"description": "the page", "content": {t: {"schema": {"type": "string"}}}}
    health = {"200": ok(ref("Health"), "yes"), "503": ok(ref("Health"), "no, and why")}
    return {
        "/api/batch/resolve": {"post": op("resolve up to batch.max_resolve handles", {
            "200": ok(ref("BatchResolved"), "one answer per handle, in order"),
            "400": BAD_REQUEST, "408": SLOW_BODY, "413": TOO_LARGE},
            request=body(ref("BatchResolve"), {"handles": [DEMO, "88.118.8/NONE"]}), tag="batch")},
        "/api/stats": {"get": op("counters (the top-level node: the network's)", {
            "200": ok(ref("Stats"))}, tag="operator")},
        "/api/openapi.json": {"get": op("this document", {"200": ok({"type": "object"})},
                                        tag="operator")},
        "/metrics": {"get": op("Prometheus metrics", {"200": text("text/plain")},
                               tag="operator")},
        "/healthz": _get_and_head(op("liveness", health, tag="operator")),
        "/readyz": _get_and_head(op("readiness: seeded and upstream peers answer", health,
                                    tag="operator")),
        "/dashboard": {"get": op("the live dashboard (recursive node)",
                                 {"200": text("text/html")}, tag="operator")},
        "/dashboard/dashboard.js": {"get": op("the dashboard's script",
                                              {"200": text("text/javascript")}, tag="operator")},
        "/dashboard/data": {"get": op("what the dashboard shows, gathered at most once per "
                                      "observe.dashboard_cache seconds",
                                      {"200": ok({"type": "object"})}, tag="operator")},
    }


def _redirect_op() -> dict:
    param = dict(HANDLE_PATH, schema={"type": "string", "maxLength": 255,
                                      "pattern": r"^[0-9][0-9A-Za-z._-]*/[^\x00-\x1f\x7f]+$"})
    get = op("302 to the record's first public URL value, as Handle proxies do", {
        "302": {"description": "redirect", "headers": {"Location": {
            "required": True, "schema": {"type": "string"}}},
            "content": {"text/html": {"schema": {"type": "string"}}}},
        "400": BAD_REQUEST,
        "404": error(404, [E.PROTOCOL_ERROR, E.HANDLE_NOT_FOUND, E.VALUES_NOT_FOUND],
                     "no handle (100), no URL (200), or not a handle (4: no such endpoint)"),
        "503": UNAVAILABLE}, params=[param], tag="proxy")
    return {"get": get, "head": _head(get)}


@lru_cache(maxsize=8)
def document(role: Role, routes: frozenset[tuple[str, str]]) -> dict:
    """The description of a node of ``role`` serving ``routes`` ((path, METHOD) pairs; the
    templated paths ``/api/handles/{handle}`` and ``/{handle}`` stand for their routes)."""
    recursive = role == Role.RECURSIVE
    paths = {HANDLE_PARAM: _handle_ops(recursive), **_common_ops(),
             **(_recursive_ops() if recursive else _serving_ops()), REDIRECT: _redirect_op()}
    served = {}
    for path, ops in paths.items():
        kept = {m: o for m, o in ops.items() if (path, m.upper()) in routes}
        if kept:
            served[path] = kept
    return {
        "openapi": "3.1.0",
        "info": {"title": f"idsim {role} node: Handle REST API", "version": "1",
                 "description": "Handle.Net 9.3.1's REST API (shapes, statuses, codes) plus "
                 "idsim's batch, admin and operator routes. Errors are Handle-shaped: "
                 "{responseCode, message, handle}. Accept: application/msgpack gets the "
                 "same documents as msgpack."},
        "paths": served,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"basic": {
            "type": "http", "scheme": "basic",
            "description": "user index:handle of a login (300:0.NA/<prefix>), URL-encoded "
                           "as pyhandle sends it, and its secret"}}},
    }


def handler(role: Role, exact: dict, handle_methods: dict):
    """The ``GET /api/openapi.json`` handler of a ``NodeAPI`` with these route tables."""
    rendered: list[bytes] = []

    async def serve(node, request: web.BaseRequest) -> web.Response:
        if not rendered:
            routes = {(p, m) for p, methods in exact.items() for m in methods}
            routes |= {(HANDLE_PARAM, m) for m in handle_methods}
            routes |= {(REDIRECT, "GET"), (REDIRECT, "HEAD")}  # everything else is a redirect
            rendered.append(orjson.dumps(document(role, frozenset(routes))))
        return web.Response(body=rendered[0],
                            headers={"Content-Type": "application/json;charset=utf-8"})
    return serve
