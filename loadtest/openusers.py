"""Locust side of the open model (``loadtest.openmodel``): users that start on a schedule.

With ``--idsim-rate SPEC`` (``openmodel.parse_rate``) every Locust process that runs users
(the only one, or each worker of ``--processes``) builds its share of the schedule at test
start: ``1/--idsim-shares`` of the rate, seeded ``--idsim-seed`` + its worker index, so N
processes together send the whole Poisson stream. Its users share one ``Pacer``: each takes
the next intended start, sleeps until it (gevent), sends, and the request event (its context
carries the intended start) is recorded twice in ``OpenStats``; Locust's own statistics stay
the uncorrected view. When the test stops, the starts due but never taken count as dropped
and each process writes ``--idsim-open-out/open-<pid>.json`` (``OpenStats.to_dict``), which
``loadtest.runner`` merges. Imports nothing asyncio (Locust runs on gevent).
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser

from loadtest.openmodel import LEAD, OpenStats, Pacer, Share, parse_rate, schedule
from loadtest.users import Resolver
from resolver.config import OpenModelConfig

_pacer: Pacer | None = None
_written = False


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    cfg = OpenModelConfig()
    g = parser.add_argument_group("idsim open model")
    g.add_argument("--idsim-rate", default="", help="rate shape (openmodel.parse_rate)")
    g.add_argument("--idsim-shares", type=int, default=1, help="processes sharing the rate")
    g.add_argument("--idsim-late-after", type=float, default=cfg.late_after)
    g.add_argument("--idsim-max-lag", type=float, default=cfg.max_lag)
    g.add_argument("--idsim-open-out", default="", help="directory for open-<pid>.json")


@events.test_start.add_listener
def _test_start(environment, **_kw) -> None:
    global _pacer, _written
    from locust.runners import MasterRunner
    opts = environment.parsed_options
    if isinstance(environment.runner, MasterRunner) or not opts.idsim_rate:
        return
    index = getattr(environment.runner, "worker_index", 0)
    shape = Share(parse_rate(opts.idsim_rate), 1 / max(1, opts.idsim_shares))
    stats = OpenStats(opts.idsim_late_after)
    seed = OpenModelConfig().seed if opts.idsim_seed is None else opts.idsim_seed  # users.py's
    _pacer = Pacer(schedule(shape, random.Random(seed + index)),
                   time.time() + LEAD, stats, opts.idsim_max_lag)
    _written = False


def _write(environment) -> None:
    global _written
    out = environment.parsed_options.idsim_open_out
    if _pacer is None or _written or not out:
        return
    _pacer.finish(time.time())
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"open-{os.getpid()}.json").write_text(json.dumps(_pacer.stats.to_dict()))
    _written = True


@events.test_stop.add_listener
def _test_stop(environment, **_kw) -> None:
    _write(environment)


@events.quitting.add_listener
def _quitting(environment, **_kw) -> None:
    _write(environment)


@events.request.add_listener
def _request(context=None, start_time=None, response_time=0.0, exception=None, **_kw) -> None:
    if _pacer is not None and context and "intended" in context and start_time is not None:
        _pacer.stats.record(context["intended"], start_time,
                            start_time + float(response_time or 0.0) / 1000, exception is None)


class PacedUser(FastHttpUser):
    """A user whose ``send()`` runs at each intended start it takes from the shared pacer."""
    abstract = True
    wait_time = constant(0)
    intended: float | None = None

    def context(self) -> dict:
        return {} if self.intended is None else {"intended": self.intended}

    def send(self) -> None:
        raise NotImplementedError

    @task
    def paced(self) -> None:
        if _pacer is None:
            raise StopUser()
        intended = _pacer.take(time.time())
        if intended is None:
            raise StopUser()  # the schedule is over
        wait = intended - time.time()
        if wait > 0:
            gevent.sleep(wait)
        self.intended = intended
        try:
            self.send()
        finally:
            self.intended = None


class OpenResolver(PacedUser):
    """``Resolver``'s lookups (same identifiers, same checks), started on schedule."""
    on_start = Resolver.on_start

    def send(self) -> None:
        Resolver.resolve(self)
