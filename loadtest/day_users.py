"""Locust entry point of the national day (``idsim load --scenario day``): ``DayUser``.

Until the open model (``loadtest.openmodel``) drives it, the day runs on a fixed pool of users
sharing one schedule per Locust process (``loadtest.openmodel.schedule`` of the process's
``DayShape``, else ``loadtest.day.starts``): each user takes the next intended start, sleeps
until it, and makes the request the ``Picker`` drew: a resolve through the recursive node
(``--host``; an unknown identifier must answer 404) or a registration (PUT, 201) at the
enterprise's node with its login. When every user is busy starts run late; each request is
recorded with its lateness, so the hourly summary gives the latency from the intended start
too. With ``--processes N`` each worker plays ``--day-share``/N of the day (the runner
divides it).

Records (``--idsim-day-log DIR``): ``DIR/day-<pid>.bin``, ``loadtest.day.RECORD`` = (intended
s from the schedule's start, lateness s, latency ms, ok, kind), read back by ``day.read``.
Imports nothing asyncio: Locust runs on gevent.
"""
from __future__ import annotations

import base64
import json
import os
import random
import time
from pathlib import Path
from urllib.parse import quote

import gevent
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser

from loadtest import day
from loadtest.users import cluster
from resolver.config import DayConfig

try:  # m1's open-model schedule (issue 13) once merged; until then the day's own Poisson one
    from loadtest.openmodel import schedule
except ImportError:
    schedule = day.starts

CHUNK = 64 * 1024
_D = DayConfig()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    g = parser.add_argument_group("idsim day")
    g.add_argument("--day-share", type=float, default=_D.share,
                   help="this process's share of the national daily resolutions")
    g.add_argument("--day-compress", type=float, default=_D.compress,
                   help="simulated seconds per wall second")
    g.add_argument("--day-seed", type=int, default=0, help="seed of the draws (0: random)")
    g.add_argument("--idsim-day-log", default="", help="directory for the day's records")
    # --idsim-data and the web UI's host: loadtest.users' options


class Plan:
    """One process's day: the shape, the picker, the shared schedule and the records."""

    def __init__(self, opts) -> None:
        from resolver.templates import template_of
        from topology.tomlio import load as load_topology
        topo = load_topology(Path(opts.idsim_data) / "topology.toml")
        templates = topo.templates_by_industry()
        members = [day.Member(e.prefix, e.industry, e.identifiers,
                              template_of(templates, e.industry)) for e in topo.enterprises]
        self.rng = random.Random(opts.day_seed or None)
        self.picker = day.Picker(members, topo.seed, zipf_s=_D.zipf_s,
                                 enterprise_s=_D.enterprise_s, unknown_share=_D.unknown_share,
                                 register_share=_D.register_share)
        self.shape = day.DayShape.of(_D.national_daily, opts.day_share, opts.day_compress)
        self.starts = schedule(self.shape, self.rng)
        self.t0: float | None = None
        self.log_dir = Path(opts.idsim_day_log) if opts.idsim_day_log else None
        self.buffer = bytearray()

    def next_start(self) -> float | None:
        """The next intended start (wall clock), or None: the day is over."""
        if self.t0 is None:
            self.t0 = time.time()
        t = next(self.starts, None)
        return None if t is None else self.t0 + t

    def record(self, intended: float, sent: float, latency_ms: float, ok: bool, kind: int):
        self.buffer += day.RECORD.pack(intended - self.t0, sent - intended, latency_ms, ok, kind)
        if len(self.buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buffer and self.log_dir is not None:
            with (self.log_dir / f"day-{os.getpid()}.bin").open("ab") as f:
                f.write(self.buffer)
        self.buffer.clear()


_plan: Plan | None = None


def plan_of(user) -> Plan:
    global _plan
    if _plan is None:
        _plan = Plan(user.environment.parsed_options)
    return _plan


@events.test_stop.add_listener
def _test_stop(**_kw) -> None:
    if _plan is not None:
        _plan.flush()


@events.quitting.add_listener
def _quitting(**_kw) -> None:
    if _plan is not None:
        _plan.flush()


class DayUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.plan = plan_of(self)
        self.logins = cluster(self.environment.parsed_options.idsim_data)["loginsData"][
            "enterprises"]

    @task
    def one(self) -> None:
        intended = self.plan.next_start()
        if intended is None:
            raise StopUser()
        pick = self.plan.picker.pick(self.plan.rng)  # drawn before the wait: no yield between
        if (delay := intended - time.time()) > 0:
            gevent.sleep(delay)
        sent = time.time()
        ok = self.register(pick.prefix) if pick.kind == day.REGISTER else self.resolve(pick)
        self.plan.record(intended, sent, (time.time() - sent) * 1000, ok, pick.kind)

    def resolve(self, pick: day.Pick) -> bool:
        known = pick.kind == day.RESOLVE
        want = 200 if known else 404
        handle = f"{pick.prefix}/{pick.suffix}"
        with self.client.get(f"/api/handles/{handle}", name="resolve" if known else
                             "resolve unknown", catch_response=True) as resp:
            if resp.status_code == want:
                resp.success()  # a 404 for an unknown identifier is the right answer
                return True
            resp.failure(f"{handle}: HTTP {resp.status_code}, wanted {want}")
            return False

    def register(self, prefix: str) -> bool:
        login = self.logins[prefix]
        token = base64.b64encode(f"{quote(login['username'])}:{login['secret']}".encode())
        sfx = f"DAY-{self.plan.rng.getrandbits(48):012x}"
        values = [{"index": 1, "type": "URL",
                   "data": {"format": "string", "value": f"https://ex.com/{prefix}/{sfx}"}}]
        with self.client.put(f"{login['httpUrl']}/api/handles/{prefix}/{sfx}?overwrite=false",
                             data=json.dumps({"values": values}), name="register",
                             headers={"Authorization": f"Basic {token.decode()}",
                                      "Content-Type": "application/json"},
                             catch_response=True) as resp:
            if resp.status_code != 201:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return False
            return True
