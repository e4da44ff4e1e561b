"""The access log: one JSON line per HTTP request a node answers, off unless asked for.

A line is ``{"time", "node", "remote", "method", "path", "status", "bytes", "ms"}``: the
wall time the answer was sent (ISO 8601, UTC, milliseconds), the node's name, the client's
address, the request's method and path (with its query), the HTTP status, the body bytes
sent and how long the answer took in milliseconds.

``resolver.server.serve(..., access_log=AccessLog(...))`` plugs it into aiohttp's low-level
server as its access logger (``JsonAccessLogger``); without one the server is built with
``access_log=None``, exactly as before, so an access log that is off costs nothing.

Invariants: ``config.access_sample`` (0..1, values above 1 count as 1) is the share of
requests written, drawn from the injected ``rng``; the time comes from the injected clock.
Files rotate at ``config.access_max_bytes`` keeping ``config.access_backups`` old ones
(``logging.handlers.RotatingFileHandler``): one file per process, since rotation is not
safe with several writers. Several nodes of one process share it; each line names its node.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import random
from datetime import datetime, timezone
from pathlib import Path

from aiohttp.abc import AbstractAccessLogger

from resolver.clock import SYSTEM, Clock
from resolver.config import HttpConfig


def iso_time(seconds: float) -> str:
    """``2026-12-01T18:30:00.123Z`` for a wall time in seconds."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def line(now: float, node: str, remote: str | None, method: str, path: str, status: int,
         size: int, seconds: float) -> str:
    """One access-log line (pure)."""
    return json.dumps({"time": iso_time(now), "node": node, "remote": remote or "-",
                       "method": method, "path": path, "status": status, "bytes": size,
                       "ms": round(seconds * 1000, 3)}, ensure_ascii=False)


class AccessLog:
    """Where one node's access lines go, and which requests are written (``sample``)."""

    __slots__ = ("node", "logger", "sample", "rng", "clock")

    def __init__(self, node: str, handler: logging.Handler, config: HttpConfig, *,
                 rng: random.Random | None = None, clock: Clock = SYSTEM) -> None:
        self.node = node
        self.logger = logging.getLogger(f"idsim.access.{node}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # access lines go to the access file only
        if handler not in self.logger.handlers:
            self.logger.addHandler(handler)
        self.sample = min(1.0, config.access_sample)
        self.rng = rng or random.Random()
        self.clock = clock

    def taken(self) -> bool:
        """Whether this request is written (every one at ``sample`` 1)."""
        return self.sample >= 1.0 or self.rng.random() < self.sample

    def write(self, request, response, seconds: float) -> None:
        if not self.taken():
            return
        self.logger.info(line(self.clock(), self.node, request.remote, request.method,
                              request.path_qs, response.status, response.body_length,
                              seconds))


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp's access logger interface over an ``AccessLog`` (passed as its ``logger``)."""

    def log(self, request, response, time: float) -> None:
        self.logger.write(request, response, time)


def file_handler(path: Path, config: HttpConfig) -> logging.Handler:
    """A rotating handler writing bare lines to ``path`` (its directory is made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=config.access_max_bytes, backupCount=config.access_backups,
        encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def access_logs(path: Path, config: HttpConfig, *, rng: random.Random | None = None,
                clock: Clock = SYSTEM):
    """``name -> AccessLog``: the access logs of the nodes of one process, one file."""
    handler = file_handler(path, config)
    rng = rng or random.Random()
    return lambda name: AccessLog(name, handler, config, rng=rng, clock=clock)
