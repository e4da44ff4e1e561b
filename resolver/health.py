"""Liveness and readiness of a node: ``GET /healthz`` and ``GET /readyz``.

``/healthz`` answers 200 whenever the process serves HTTP (liveness). ``/readyz`` answers 200
only when the node has finished starting (seeded and joined the network: the wiring attaches
a ``Readiness`` to the node as its last step, ``topology.readiness.attach``) and every check
of its upstream passes; otherwise 503 with a Handle-shaped body (``responseCode`` 3,
``message`` saying why) that also lists each check.

The checks per role (built by ``topology.readiness``): recursive: the top-level node answers
an RPC; secondary: the top-level node is reachable and holds this node's prefixes; top: its
store is open. A check is an ``async`` callable returning a short detail or raising
``NotReady(reason)`` (any other exception counts as a failure too, named by its type).

Invariants: the decision (``decide``) and the reuse of a check's result (``CheckCache``) are
pure, with time from the injected clock; a check's result is reused for ``peer_check_ttl``
seconds, and concurrent /readyz requests share one run of a check, so polling /readyz never
multiplies the calls to peers.
"""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web

from resolver import errors
from resolver.clock import Clock
from resolver.net import client_session

BOOT = secrets.token_hex(8)  # this process, as /healthz names it (a restart is a new one)
STARTING = "starting: the node has not finished seeding and joining the network"


class NotReady(Exception):
    """A check failed; the message says why, in words an operator can act on."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def doc(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Verdict:
    ready: bool
    reasons: tuple[str, ...]
    checks: tuple[CheckResult, ...]


def decide(started: bool, results: list[CheckResult]) -> Verdict:
    """*Pure*: ready when started and every check passed; the reasons otherwise, in order."""
    reasons = ([] if started else [STARTING]) + [f"{r.name}: {r.detail}" for r in results
                                                 if not r.ok]
    return Verdict(not reasons, tuple(reasons), tuple(results))


class CheckCache:
    """*Pure*: the last result of one check and when it was taken; reused while younger than
    ``ttl`` seconds (clock time)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.result: CheckResult | None = None
        self.at: float | None = None

    def fresh(self, now: float) -> CheckResult | None:
        if self.result is None or self.at is None or not 0 <= now - self.at < self.ttl:
            return None
        return self.result

    def keep(self, result: CheckResult, now: float) -> None:
        self.result, self.at = result, now


Check = Callable[[], Awaitable[str]]


class Readiness:
    """What /readyz asks of one node: named checks, each cached (see the module docstring)."""

    def __init__(self, checks: dict[str, Check], *, ttl: float, timeout: float,
                 clock: Clock) -> None:
        self.checks = dict(checks)
        self.timeout = timeout
        self.clock = clock
        self._cache = {name: CheckCache(ttl) for name in self.checks}
        self._running: dict[str, asyncio.Future] = {}

    async def _run(self, name: str) -> CheckResult:
        try:
            detail = await asyncio.wait_for(self.checks[name](), self.timeout)
            result = CheckResult(name, True, detail or "ok")
        except NotReady as exc:
            result = CheckResult(name, False, str(exc))
        except asyncio.TimeoutError:
            result = CheckResult(name, False, f"no answer within {self.timeout:g} s")
        except Exception as exc:  # a check that broke is a failed check, said as such
            result = CheckResult(name, False, f"{type(exc).__name__}: {exc}"[:300])
        self._cache[name].keep(result, self.clock())
        return result

    async def check(self, name: str) -> CheckResult:
        cached = self._cache[name].fresh(self.clock())
        if cached is not None:
            return cached
        running = self._running.get(name)
        if running is None:
            running = self._running[name] = asyncio.ensure_future(self._run(name))
            running.add_done_callback(lambda _: self._running.pop(name, None))
        return await asyncio.shield(running)

    async def verdict(self) -> Verdict:
        results = await asyncio.gather(*(self.check(name) for name in self.checks))
        return decide(True, list(results))  # attached: started


def readiness_of(node) -> Readiness | None:
    """The node's ``Readiness``; None until the wiring attached it (still starting)."""
    return getattr(node, "readiness", None)


# ------------------------------------------------------------------ checks

def store_open(store) -> Check:
    """The top-level node's check: its store answers a read."""
    async def check() -> str:
        try:
            return f"store open, {store.count()} records"
        except Exception as exc:
            raise NotReady(f"store not open ({type(exc).__name__}: {exc})") from None
    return check


def rpc_answers(client, method: str, *params) -> Check:
    """The top-level node answers an RPC (an error it answers counts: it answered)."""
    async def check() -> str:
        try:
            await client.call(method, *params)
        except errors.PeerUnavailable as exc:
            raise NotReady(f"{client.address} does not answer RPC ({exc.message})") from None
        except errors.HandleError:
            pass
        return f"{client.address} answers RPC"
    return check


def prefixes_registered(top_url: str, prefixes: list[str], *, chunk: int, timeout: float,
                        recheck: float, clock: Clock, ssl_context=None) -> Check:
    """The top-level node answers ``/healthz`` and holds ``0.NA/<prefix>`` with an HS_SITE for
    each of ``prefixes``. The prefixes are asked (batch resolves of ``chunk`` handles) when the
    top-level node's process is new to this check (its ``/healthz`` ``boot``) and at most every
    ``recheck`` seconds otherwise: the batch resolves are Handle API work at the top-level
    node, which watching the network must not turn into load."""
    verified: dict = {"boot": None, "at": 0.0}

    async def check() -> str:
        handles = [f"0.NA/{p}" for p in prefixes]
        done = f"top-level node holds all {len(prefixes)} prefixes"
        missing: list[str] = []
        try:
            async with client_session(timeout=aiohttp.ClientTimeout(total=timeout),
                                      ssl_context=ssl_context) as http:
                async with http.get(f"{top_url}/healthz") as resp:
                    if resp.status != 200:
                        raise NotReady(f"top-level node {top_url} answered HTTP {resp.status} "
                                       f"to /healthz")
                    boot = (await resp.json(content_type=None)).get("boot")
                now = clock()
                if boot == verified["boot"] and 0 <= now - verified["at"] < recheck:
                    return done
                for i in range(0, len(handles), chunk):
                    async with http.post(f"{top_url}/api/batch/resolve",
                                         json={"handles": handles[i:i + chunk]}) as resp:
                        if resp.status != 200:
                            raise NotReady(f"top-level node {top_url} answered HTTP "
                                           f"{resp.status} to a batch resolve")
                        doc = await resp.json(content_type=None)
                    missing += [r.get("handle", "?")[5:] for r in doc["results"]
                                if not any(v.get("type") == "HS_SITE"
                                           for v in r.get("values", ()))]
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise NotReady(f"top-level node {top_url} unreachable "
                           f"({type(exc).__name__})") from None
        if missing:
            verified["boot"] = None
            raise NotReady(f"{len(missing)} of {len(prefixes)} prefixes not registered at "
                           f"the top-level node (first: {missing[0]})")
        verified.update(boot=boot, at=now)
        return done
    return check


# ------------------------------------------------------------------ HTTP handlers

def _json(doc: dict, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status,
                        headers={"Content-Type": "application/json;charset=utf-8",
                                 "Cache-Control": "no-store"})


async def healthz(node, request: web.BaseRequest) -> web.Response:
    """Liveness: the process answers HTTP. ``boot`` tells this process from a restarted one."""
    return _json({"responseCode": errors.SUCCESS, "status": "alive", "node": node.name,
                  "role": str(node.role), "boot": BOOT}, 200)


async def readyz(node, request: web.BaseRequest) -> web.Response:
    """Readiness: 200 when started and every upstream check passes, else 503 saying why."""
    readiness = readiness_of(node)
    verdict = await readiness.verdict() if readiness is not None else decide(False, [])
    doc = {"node": node.name, "role": str(node.role), "ready": verdict.ready,
           "checks": [r.doc() for r in verdict.checks]}
    if verdict.ready:
        return _json({"responseCode": errors.SUCCESS, **doc}, 200)
    return _json({"responseCode": errors.SERVER_TOO_BUSY,
                  "message": "not ready: " + "; ".join(verdict.reasons), "handle": None,
                  **doc}, 503)
