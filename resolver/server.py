"""Serving nodes: a runner per node with the request limits of ``HttpConfig``, uvloop for loops.

What one request may be (request line, header sizes and count) and how long an idle
connection stays open come from ``HttpConfig`` alone; oversized heads get 400/431 from
aiohttp's parser, oversized bodies 413 from ``resolver.http_input``. No defaults here.
"""
from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from resolver.access_log import JsonAccessLogger
from resolver.config import HttpConfig
from resolver.fast_http import server_class


def install_uvloop() -> None:
    """Use uvloop for every loop this process makes (roughly 2x aiohttp's throughput)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; tolerate odd platforms
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def server_limits(config: HttpConfig) -> dict:
    """``web.Server`` keyword arguments for the limits in ``config`` (test servers use them too)."""
    return {"keepalive_timeout": config.keepalive, "max_line_size": config.max_line,
            "max_field_size": config.max_field, "max_headers": config.max_headers}


async def serve(handler, host: str, port: int, config: HttpConfig | None = None, *,
                reuse_port: bool = False, ssl_context: ssl.SSLContext | None = None,
                access_log=None) -> web.ServerRunner:
    """Serve a low-level aiohttp request handler (``web.NodeAPI``) on host:port; over TLS
    with ``ssl_context`` (``topology.pki.server_context``), where a plain-text client's
    connection is closed at the failed handshake. ``access_log``: a
    ``resolver.access_log.AccessLog`` (None: no access log, no cost)."""
    config = config or HttpConfig()
    # a NodeAPI's hot GET is answered below aiohttp's request machinery ([http] fast_path)
    srv = server_class(handler, config)(handler, handler_cancellation=True,
                                        **access_logging(access_log), **server_limits(config))
    runner = web.ServerRunner(srv)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024,
                       ssl_context=ssl_context)
    await site.start()
    return runner


def access_logging(access_log) -> dict:
    """``web.Server`` keyword arguments for an access log, or for none (aiohttp's is off)."""
    if access_log is None:
        return {"access_log": None}
    return {"access_log": access_log, "access_log_class": JsonAccessLogger}


def bound_port(runner: web.BaseRunner) -> int:
    """The port a runner listens on (for servers started on port 0)."""
    if not runner.addresses:
        raise RuntimeError("runner has no bound socket")
    return runner.addresses[0][1]
