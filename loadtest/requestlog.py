"""Every request a Locust process makes, as (start time, latency, ok), for per-phase summaries.

With ``--idsim-request-log DIR`` each Locust process that makes requests appends fixed-size
records (``RECORD``: wall-clock start time in seconds, latency in ms, ok 0/1) to its own
``DIR/requests-<pid>.bin``, written in 64 KiB chunks and flushed when the test stops and when
the process quits. Without the option nothing is recorded. ``loadtest.phases.read`` streams
them back.
Imports nothing asyncio (Locust runs on gevent).
"""
from __future__ import annotations

import os
from pathlib import Path

from locust import events

from loadtest.phases import RECORD

CHUNK = 64 * 1024


class RequestLog:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.buffer = bytearray()

    def add(self, start: float, latency_ms: float, ok: bool) -> None:
        self.buffer += RECORD.pack(start, latency_ms, ok)
        if len(self.buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buffer:  # the pid now: --processes forks workers after init
            with (self.directory / f"requests-{os.getpid()}.bin").open("ab") as f:
                f.write(self.buffer)
            self.buffer.clear()


_log: RequestLog | None = None


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--idsim-request-log", default="",
                        help="directory for each process's (start, latency, ok) records")


@events.init.add_listener
def _init(environment, **_kw) -> None:
    global _log
    directory = getattr(environment.parsed_options, "idsim_request_log", "")
    _log = RequestLog(directory) if directory else None


@events.request.add_listener
def _request(response_time=0.0, exception=None, start_time=None, **_kw) -> None:
    if _log is not None and start_time is not None:
        _log.add(start_time, float(response_time or 0.0), exception is None)


@events.test_stop.add_listener
def _test_stop(**_kw) -> None:
    if _log is not None:
        _log.flush()


@events.quitting.add_listener
def _quitting(**_kw) -> None:
    if _log is not None:
        _log.flush()

