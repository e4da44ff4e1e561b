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
(``LineFile``: ``logging.handlers.RotatingFileHandler``'s files and rotation, written to
directly: a LogRecord, a second formatting and two stat calls per line would cost more than
the request). One file per process, since rotation is not safe with several writers; the
nodes of one process share it, each line naming its node. Each line is flushed as written.
"""
from __future__ import annotations

import logging.handlers
import random
import time
from functools import lru_cache
from pathlib import Path

import orjson
from aiohttp.abc import AbstractAccessLogger

from resolver.clock import SYSTEM, Clock
from resolver.config import HttpConfig


@lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def iso_time(seconds: float) -> str:
    """``2026-12-01T18:30:00.123Z`` for a wall time in seconds."""
    whole = int(seconds)
    return f"{_second(whole)}.{min(999, int((seconds - whole) * 1000)):03d}Z"


def line(now: float, node: str, remote: str | None, method: str, path: str, status: int,
         size: int, seconds: float) -> bytes:
    """One access-log line, without its newline (pure)."""
    return orjson.dumps({"time": iso_time(now), "node": node, "remote": remote or "-",
                         "method": method, "path": path, "status": status, "bytes": size,
                         "ms": round(seconds * 1000, 3)})


class LineFile(logging.handlers.RotatingFileHandler):
    """A rotating file of lines: ``RotatingFileHandler``'s naming and ``doRollover``, with
    the size kept here rather than asked of the file at every line."""

    def __init__(self, path: Path, config: HttpConfig) -> None:
        super().__init__(path, maxBytes=config.access_max_bytes,
                         backupCount=config.access_backups, encoding="utf-8")
        self.size = Path(self.baseFilename).stat().st_size

    def write(self, data: bytes) -> None:
        """Append one line (``data`` without its newline) and flush it."""
        if self.backupCount and self.maxBytes and self.size \
                and self.size + len(data) + 1 > self.maxBytes:
            self.doRollover()
            self.size = 0
        self.stream.write(data.decode() + "\n")
        self.stream.flush()
        self.size += len(data) + 1


class AccessLog:
    """Where one node's access lines go, and which requests are written (``sample``)."""

    __slots__ = ("node", "file", "sample", "rng", "clock")

    def __init__(self, node: str, file: LineFile, config: HttpConfig, *,
                 rng: random.Random | None = None, clock: Clock = SYSTEM) -> None:
        self.node = node
        self.file = file
        self.sample = min(1.0, config.access_sample)
        self.rng = rng or random.Random()
        self.clock = clock

    def taken(self) -> bool:
        """Whether this request is written (every one at ``sample`` 1)."""
        return self.sample >= 1.0 or self.rng.random() < self.sample

    def write(self, request, response, seconds: float) -> None:
        if not self.taken():
            return
        self.file.write(line(self.clock(), self.node, request.remote, request.method,
                             request.path_qs, response.status, response.body_length, seconds))


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp's access logger interface over an ``AccessLog`` (passed as its ``logger``)."""

    def log(self, request, response, time: float) -> None:
        self.logger.write(request, response, time)


def line_file(path: Path, config: HttpConfig) -> LineFile:
    """The rotating access file at ``path`` (its directory is made; appended to)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return LineFile(Path(path), config)


def access_logs(path: Path, config: HttpConfig, *, rng: random.Random | None = None,
                clock: Clock = SYSTEM):
    """``name -> AccessLog``: the access logs of the nodes of one process, one file."""
    file = line_file(path, config)
    rng = rng or random.Random()
    return lambda name: AccessLog(name, file, config, rng=rng, clock=clock)
