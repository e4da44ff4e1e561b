"""The live dashboard, served by the recursive node: ``GET /dashboard`` (one page),
``GET /dashboard/dashboard.js`` (its script) and ``GET /dashboard/data`` (the JSON it polls).

The page shows the network (the top-level node, every secondary node grouped by city on a
schematic map of China, and the recursive nodes, each with its city), each node's health,
requests/s, p99, cache hit ratio and identifiers stored, and the network's totals
(enterprises, identifiers, resolutions/s, registrations/s). Its assets are package data
(``resolver/static/``): no CDN.

``/dashboard/data`` is a ``resolver.watch`` snapshot (the top-level node's /api/stats, each
node's /readyz and /metrics) plus ``refresh``, the page's polling interval. Invariants: a
snapshot is reused for ``config.observe.dashboard_cache`` seconds (clock time) and concurrent
requests share one gathering, so many browsers do not multiply scrapes; the network's
addresses come from the wiring (``topology.readiness.attach`` sets ``node.dashboard``).
"""
from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

import orjson
from aiohttp import web

from resolver import errors
from resolver.clock import Clock
from resolver.config import Config
from resolver.watch import NodeInfo, Watcher

STATIC = Path(__file__).with_name("static")


class Dashboard:
    """The recursive node's view of the network, gathered at most once per cache period."""

    def __init__(self, top_url: str, self_url: str, config: Config, clock: Clock, *,
                 ssl_context=None, core: list[NodeInfo] | None = None) -> None:
        self.top_url = top_url
        self.self_url = self_url
        self.core = core  # every recursive node and the top-level node, with cities
        self.config = config.observe
        self.clock = clock
        self.watcher = Watcher(config, clock, ssl_context=ssl_context)
        self._doc: dict | None = None
        self._at = 0.0
        self._gathering: asyncio.Future | None = None

    async def _gather(self) -> dict:
        doc = await self.watcher.snapshot(self.top_url, recursive_url=self.self_url,
                                          core=self.core)
        doc["refresh"] = self.config.dashboard_poll
        self._doc, self._at = doc, self.clock()
        return doc

    async def data(self) -> dict:
        if self._doc is not None and 0 <= self.clock() - self._at < self.config.dashboard_cache:
            return self._doc
        if self._gathering is None:
            self._gathering = asyncio.ensure_future(self._gather())
            self._gathering.add_done_callback(lambda _: setattr(self, "_gathering", None))
        return await asyncio.shield(self._gathering)


@cache
def asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _static(name: str, kind: str):
    async def handler(node, request: web.BaseRequest) -> web.Response:
        return web.Response(body=asset(name), headers={"Content-Type": kind,
                                                       "Cache-Control": "no-cache"})
    return handler


async def data(node, request: web.BaseRequest) -> web.Response:
    dash = getattr(node, "dashboard", None)
    if dash is None:
        exc = errors.HandleError(errors.SERVER_TOO_BUSY, "the dashboard knows no network yet: "
                                 "this node is starting or was not started by idsim")
        return web.Response(body=orjson.dumps(exc.body()), status=exc.status,
                            headers={"Content-Type": "application/json;charset=utf-8"})
    doc = await dash.data()
    return web.Response(body=orjson.dumps(doc), headers={
        "Content-Type": "application/json;charset=utf-8", "Cache-Control": "no-store"})


ROUTES = {
    "/dashboard": {"GET": _static("dashboard.html", "text/html;charset=utf-8")},
    "/dashboard/dashboard.js": {"GET": _static("dashboard.js",
                                               "text/javascript;charset=utf-8")},
    "/dashboard/data": {"GET": data},
}
