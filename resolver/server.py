"""Serving nodes: limits on what a request may be, a runner per node, uvloop for every loop."""
from __future__ import annotations

import asyncio

from aiohttp import web

# What one request may be. Oversized heads get 400/431 from aiohttp's parser, bodies 413.
MAX_LINE = 8190        # request line and each header line
MAX_FIELD = 8190
MAX_HEADERS = 64
KEEPALIVE = 75.0


def install_uvloop() -> None:
    """Use uvloop for every loop this process makes (roughly 2x aiohttp's throughput)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; tolerate odd platforms
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(handler, host: str, port: int, *, reuse_port: bool = False) -> web.ServerRunner:
    """Serve a low-level aiohttp request handler (``web.NodeAPI``) on host:port."""
    srv = web.Server(handler, handler_cancellation=True, access_log=None,
                     keepalive_timeout=KEEPALIVE, max_line_size=MAX_LINE,
                     max_field_size=MAX_FIELD, max_headers=MAX_HEADERS)
    runner = web.ServerRunner(srv)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    return runner


def bound_port(runner: web.BaseRunner) -> int:
    """The port a runner listens on (for servers started on port 0)."""
    if not runner.addresses:
        raise RuntimeError("runner has no bound socket")
    return runner.addresses[0][1]
