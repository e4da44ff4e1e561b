"""Answers of the Handle REST API: a document as JSON (or msgpack when the client accepts it),
a Handle-shaped error, and the rendered record of the hot path.

Invariants: every answer that is not a success is Handle-shaped (responseCode, message,
handle) with its HTTP status; a 401 says how to authenticate (``WWW-Authenticate``); a
non-success responseCode is kept on the response for the metrics (``resolver.metrics``).
"""
from __future__ import annotations

import msgpack
import orjson
from aiohttp import web

from resolver import errors, metrics, records
from resolver.http_input import MSGPACK

JSON = "application/json;charset=utf-8"
JSON_HEADERS = {"Content-Type": JSON}


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


def record_json(text: str, ans: records.Answer) -> web.Response:
    """The anonymous, unfiltered answer: bytes joined around the values rendered once."""
    return web.Response(body=record_body(text, ans), headers=JSON_HEADERS)


def record_body(text: str, ans: records.Answer) -> bytes:
    """``record_json``'s body (the fast path ``resolver.fast_http`` sends it too)."""
    return (b'{"responseCode":1,"handle":' + orjson.dumps(text) + b',"values":' +
            ans.public_json + b'}')
