"""How a host process (``idsim up``'s, ``idsim node``) logs: one line per event, readable.

    2026-12-01T18:30:00.123Z INFO idsim.host [88.118] ready: serving http://127.0.0.1:8004

Each line: ISO 8601 UTC time with milliseconds, level, logger, the node it concerns (the
``node`` of ``extra=``, else the process's nodes) and the message. ``idsim`` loggers log at
INFO (start, ready, stop) and above; libraries at WARNING. ``idsim up``'s hosts write to
stderr, which the supervisor points at ``<data>/logs/host-<i>.log``; ``idsim node`` writes to
``<data>/logs/node-<code>.log``. The supervisor's notes in a host's log (an exit, a
restart) are lines of the same shape (``line``), logger ``idsim.supervisor``.

aiohttp logs every request its HTTP parser rejects (a malformed request line, oversized
headers) as an ERROR with a traceback; the client already got its 400, and a hostile client
could fill the disk with them, so ``ParserNoise`` drops those records (the access log, when
on, still shows each such request). Other aiohttp errors are kept.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, Iterable

from aiohttp.http_exceptions import HttpProcessingError

from resolver.access_log import iso_time

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(node)s] %(message)s"


def line(level: str, logger: str, node: str, message: str, now: float) -> str:
    """One log line as ``FORMAT`` makes it, for writers outside ``logging`` (pure)."""
    return f"{iso_time(now)} {level} {logger} [{node}] {message}"


class Formatter(logging.Formatter):
    """``FORMAT`` with ISO 8601 UTC times."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


class NodeField(logging.Filter):
    """Gives every record a ``node`` (the one it names, else the process's nodes)."""

    def __init__(self, nodes: str) -> None:
        super().__init__()
        self.nodes = nodes

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "node"):
            record.node = self.nodes
        return True


class ParserNoise(logging.Filter):
    """Drops aiohttp's reports of requests its parser rejected (answered 400 already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


def setup(nodes: Iterable[str], *, stream: IO[str] | None = None,
          path: Path | None = None) -> logging.Handler:
    """Point the root logger at ``path`` (appended) or ``stream`` (default stderr)."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(Formatter(FORMAT))
    handler.addFilter(NodeField(",".join(nodes) or "-"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("idsim").setLevel(logging.INFO)
    aiohttp_server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserNoise) for f in aiohttp_server.filters):
        aiohttp_server.addFilter(ParserNoise())
    return handler
