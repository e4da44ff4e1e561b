"""``idsim resolve`` and ``idsim register``: a user's requests to the running cluster.

Both find the cluster from ``--data`` (its ``cluster.json``): ``resolve`` asks its recursive
node, ``register`` the node serving the prefix with the enterprise's login from
``logins.json``; ``--via`` (and ``--user``/``--secret``) override. What the user got wrong
(a malformed handle or ``--value``, an unreachable or malformed URL) is a ``UserError``:
``topology.cli`` prints its one line and exits with 2, never a traceback. An answer from a
node, error or not, is printed as the node sent it (exit 0 on success, else 1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from http import client as http_client
from pathlib import Path
from urllib.parse import quote

from resolver import auth, errors, identifiers
from resolver.roles import Role
from topology import pki
from topology.cluster import read_state

DEFAULT_DATA = "idsim-data"
DEFAULT_URL = "http://127.0.0.1:8000"  # idsim up's and idsim node's default port
TIMEOUT = 10.0  # s for one request


class UserError(Exception):
    """A mistake in what the user asked for; its message is one line saying what."""


def http(method: str, url: str, body: dict | None = None, user: str | None = None,
         secret: str | None = None, data: str | None = None) -> tuple[int, dict]:
    """One request; the status and the JSON answer. UserError when ``url`` is malformed or
    nothing answers there. ``https://`` is verified with the cluster CA of the data directory
    ``data`` when it has one (``idsim up --tls``), else the system's roots."""
    try:
        req = urllib.request.Request(url, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    except ValueError as exc:  # no scheme, say
        raise UserError(f"not a URL: {url} ({exc})") from None
    req.add_header("Accept", "application/json")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if user:
        req.add_header("Authorization", auth.basic_header(user, secret))
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT,
                                    context=pki.client_context_for(data) if data else None
                                    ) as resp:
            return resp.status, _json(resp.read(), url)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"message": raw.decode(errors="replace")[:300]}
    except urllib.error.URLError as exc:
        raise UserError(f"cannot reach {_origin(url)}: {exc.reason}") from None
    except (http_client.InvalidURL, ValueError) as exc:
        raise UserError(f"not a URL: {url} ({exc})") from None
    except (OSError, http_client.HTTPException) as exc:  # timeouts, resets
        raise UserError(f"no answer from {_origin(url)}: {exc or type(exc).__name__}") from None


def _json(raw: bytes, url: str) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise UserError(f"{_origin(url)} is not an idsim node (its answer is not JSON)") from None


def _origin(url: str) -> str:
    return url.split("/api/", 1)[0]


def handle_arg(text: str) -> str:
    """argparse type: a handle ``prefix/suffix``."""
    try:
        identifiers.parse(text)
    except errors.HandleError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a handle: {exc.message} "
                                         f"(e.g. 88.118.8/SN000000001)") from None
    return text


def value_arg(text: str) -> tuple[str, str]:
    """argparse type: ``TYPE=TEXT`` with a type that is not empty."""
    vtype, eq, val = text.partition("=")
    if not eq or not vtype.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE=TEXT (e.g. EMAIL=qa@example.com)")
    return vtype.strip(), val


def handle_url(base: str, handle: str, query: str = "") -> str:
    return f"{base.rstrip('/')}/api/handles/{quote(handle, safe='/')}{query}"


def cmd_resolve(args) -> int:
    via = args.via
    if via is None:
        state = read_state(args.data)
        via = state["recursiveUrl"] if state else DEFAULT_URL
        if state is None:
            print(f"no cluster running from {args.data}: asking {via} (--via to choose)",
                  file=sys.stderr)
    t = time.perf_counter()
    status, doc = http("GET", handle_url(via, args.handle), data=args.data)
    ms = (time.perf_counter() - t) * 1000
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    print(f"HTTP {status} in {ms:.1f} ms via {via}", file=sys.stderr)
    return 0 if status == 200 else 1


def cmd_register(args) -> int:
    """PUT an identifier at the node serving its prefix. With a cluster running from --data,
    the node and the enterprise's login are found there; --via/--user/--secret override."""
    prefix = args.handle.partition("/")[0]
    via, user, secret = args.via, args.user, args.secret
    state = read_state(args.data)
    if state is not None:
        homes = [n for n in state["nodes"] if n["role"] == Role.SECONDARY
                 and identifiers.is_under(prefix, n["name"])]
        if via is None and homes:
            via = max(homes, key=lambda n: len(n["name"]))["httpUrl"]
        try:
            logins = json.loads(Path(state["logins"]).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the cluster's logins {state['logins']}: {exc}") from None
        login = logins["enterprises"].get(prefix)
        if login and user is None:
            user, secret = login["username"], secret or login["secret"]
    if via is None or user is None or secret is None:
        raise UserError("needs --via, --user and --secret (or a cluster running from --data "
                        f"that serves prefix {prefix} and holds its login)")
    values = [{"index": 1, "type": "URL", "data": {"format": "string", "value": args.url}}]
    for i, (vtype, val) in enumerate(args.value, start=2):
        values.append({"index": i, "type": vtype, "data": {"format": "string", "value": val}})
    q = "" if args.overwrite else "?overwrite=false"
    status, doc = http("PUT", handle_url(via, args.handle, q), {"values": values}, user, secret,
                       data=args.data)
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    print(f"HTTP {status} from {via} as {user}", file=sys.stderr)
    return 0 if status in (200, 201) else 1


def add_client_commands(sub) -> None:
    res = sub.add_parser("resolve", help="resolve an identifier")
    res.add_argument("handle", type=handle_arg, help="prefix/suffix, e.g. 88.118.8/SN000000001")
    res.add_argument("--via", help="a node's URL to ask (default: the recursive node of the "
                                   "cluster running from --data, else " + DEFAULT_URL + ")")
    res.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data directory")
    res.set_defaults(func=cmd_resolve)

    reg = sub.add_parser("register", help="register (or replace) an identifier")
    reg.add_argument("handle", type=handle_arg, help="prefix/suffix, e.g. 88.118.8/MY-PART-1")
    reg.add_argument("--url", required=True, help="its URL value (index 1)")
    reg.add_argument("--value", action="append", default=[], metavar="TYPE=TEXT", type=value_arg,
                     help="one more value, e.g. EMAIL=qa@example.com (repeatable)")
    reg.add_argument("--user", help="e.g. 300:0.NA/88.118.8 (default: from the cluster's logins)")
    reg.add_argument("--secret", default=os.environ.get("IDSIM_SECRET"),
                     help="the user's secret (default: $IDSIM_SECRET, else the cluster's logins)")
    reg.add_argument("--overwrite", action="store_true",
                     help="replace the identifier if it exists (default: refuse, 409)")
    reg.add_argument("--via", help="the serving node's URL (default: found in the cluster)")
    reg.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data directory")
    reg.set_defaults(func=cmd_register)
