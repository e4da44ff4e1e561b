"""``idsim load``: a Locust scenario against the cluster in ``--data`` (started if none runs).

On a terminal it shows the run's progress live (seconds, requests, rate, failures, p99); its
files (Locust's CSV and HTML report) stay in ``<data>/runs/<time>/``, and the summary table
is printed at the end. A cluster it had to start runs on the port ``--data`` last ran on
(``--port`` to choose) and is stopped again afterwards.

``--faults PLAN`` runs a fault plan (``topology.faultplan``) alongside, from the start of the
Locust run, printing each event as it happens; the summary adds each phase's requests,
success rate, p50 and p99. The plan must end within ``--time``. With a plan the exit code says
whether every fault was set and cleared (failed requests are then expected), not whether
every request succeeded.

Each run is recorded (``loadtest.records``: ``run.json`` with its inputs, ``results.json``,
``plot.png``); ``--again RUN`` repeats one: its options and plan, against the cluster in
``--data`` (started from the recorded topology and configuration when none runs), refused
when the running cluster is another network than the recorded one.
``--scenario day`` plays a national day (``loadtest.day``: ``--share`` of ~150 million
resolutions, ``--compress`` simulated seconds per wall second, ``--time`` ignored) over the
synthetic population: a cluster it starts serves ``--population full``, a running one must; the
summary adds one row per simulated hour.
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path

from loadtest import records  # run records: run.json, results.json, --again
from topology.cli_client import DEFAULT_DATA, UserError
from topology.cluster import Cluster, last_port, read_state, running_pids

DEFAULT_PORT = 8000


def parse_duration(text: str) -> float:
    """``30s``, ``2m``, ``1h`` or plain seconds (``faultplan.parse_seconds``), positive;
    ValueError otherwise."""
    from topology.faultplan import parse_seconds
    seconds = parse_seconds(text)
    if not seconds > 0:
        raise ValueError(f"not a positive duration: {text!r}")
    return seconds


def duration_arg(text: str) -> float:
    """argparse type for ``--time``."""
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (e.g. 30s, 2m, 1h or seconds)") from None


class LiveProgress:
    """The run's progress on a terminal: one line, redrawn in place (rich)."""

    def __init__(self, seconds: float) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        self.seconds = seconds
        self.bar = Progress(TextColumn("load"), BarColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=Console(stderr=False),
                            transient=False)
        self.task = self.bar.add_task("starting Locust…", total=seconds)

    def __enter__(self) -> "LiveProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def __call__(self, elapsed: float, row) -> None:
        text = "waiting for the first statistics…" if row is None else (
            f"{row.requests:,} requests  {row.rps:,.0f} req/s  {row.failures:,} failures  "
            f"p99 {row.p99:.0f} ms")
        self.bar.update(self.task, completed=min(elapsed, self.seconds), description=text)


def make_applier(data_dir: str):
    """The faults' applier for the cluster in ``data_dir`` (tests put a fake here)."""
    from topology.plan_applier import ClusterApplier
    return ClusterApplier(data_dir)


def read_faults(args):
    """``--faults``: the plan and its applier, or None; UserError when it cannot run."""
    if not args.faults:
        return None, None
    from topology.faultplan import PlanError, load_plan
    from topology.plan_applier import FaultsUnavailable
    try:
        plan = load_plan(args.faults)
    except PlanError as exc:
        raise UserError(str(exc)) from None
    if plan.end > args.time:
        raise UserError(f"the plan {args.faults} runs until {plan.end:g} s, after the load "
                        f"stops ({args.time:g} s): give --time {plan.end + 10:.0f}s or more")
    try:
        return plan, make_applier(args.data)
    except FaultsUnavailable as exc:
        raise UserError(str(exc)) from None


def replay_args(args) -> Path | None:
    """``--again RUN``: the run's directory, its options and plan set on ``args``; None
    without ``--again``. UserError when RUN is no run record."""
    if not args.again:
        return None
    try:
        run = records.find_run(args.again, args.data)
        records.replay(args, run)
    except records.RecordError as exc:
        raise UserError(str(exc)) from None
    return run


def read_rate(args):
    """``--rate`` / ``--rate-shape``: the open model's ``openmodel.Steps``, or None (closed)."""
    if args.rate is None and args.rate_shape is None:
        return None
    from loadtest.openmodel import load_shape, parse_rate
    if args.scenario not in ("resolve", "mixed"):
        raise UserError(f"--rate runs resolutions on a schedule; scenario {args.scenario!r} "
                        "is closed-model only")
    try:
        rate = (load_shape(args.rate_shape) if args.rate_shape is not None
                else parse_rate(args.rate, args.time))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return rate


def cmd_load(args) -> int:
    """Run a Locust scenario against the cluster in --data, starting one if none runs."""
    from loadtest import runner
    from topology.presets import get_preset

    again = replay_args(args)  # --again RUN: the recorded options and plan (run records)
    plan, applier = read_faults(args)
    rate = read_rate(args)
    cluster = None
    if not running_pids(Path(args.data), print):
        port = args.port if args.port is not None else last_port(args.data) or DEFAULT_PORT
        topo = ((again and records.recorded_topology(again)) or get_preset(args.preset)
                ).with_ports(port)
        if args.demo is not None:
            topo = replace(topo, identifiers_per_enterprise=args.demo)
        if args.scenario == "day":  # the day asks for the synthetic population
            topo = replace(topo, population="full")
        print(f"starting {topo.name} in {args.data} on port {port} for the load run…",
              flush=True)
        cluster = Cluster(topo, Path(args.data), store="lmdb")
        if again and (conf := records.recorded_config(again)) is not None:
            cluster.config = conf
        try:
            cluster.start()
        except RuntimeError as exc:
            cluster = None
            raise UserError(f"could not start a cluster: {exc}") from None
    try:
        host = args.host or read_state(args.data)["recursiveUrl"]
        if again:
            try:
                for warning in records.check_same_network(records.read_inputs(again), args.data):
                    print(f"warning: {warning}", flush=True)
            except records.RecordError as exc:
                raise UserError(str(exc)) from None
            print(f"replaying {again}", flush=True)
        if args.seed is None:  # drawn here so the record can replay it
            args.seed = random.SystemRandom().randrange(2**31)
        out = runner.run_dir(args.data)
        records.write_inputs(out, args.data, kind="load", options=records.options_of(args),
                             faults=args.faults, host=host)
        kw = dict(seconds=args.time, users=args.users, spawn_rate=args.spawn_rate,
                  processes=args.processes, out=out, rate=rate)
        shape = day_setup(args, out, kw) if args.scenario == "day" else None
        kw["extra"] = kw.get("extra", []) + ["--idsim-seed", str(args.seed)]
        print(f"running scenario {args.scenario!r} against {host} for {kw['seconds']:.0f} s "
              f"({args.users} users, {args.processes} Locust process(es))…", flush=True)
        if rate is not None:
            print(f"open model: {rate.describe()}, Poisson arrivals, up to {args.users} "
                  "requests in flight", flush=True)
        if plan is not None:
            from topology.faultplan import PlanError, check_nodes
            try:
                check_nodes(plan, {n["name"] for n in read_state(args.data)["nodes"]})
            except PlanError as exc:
                raise UserError(str(exc)) from None
            print(f"fault plan {args.faults}: {len(plan.faults)} fault(s) until "
                  f"{plan.end:g} s", flush=True)
            kw.update(plan=plan, applier=applier, on_fault=lambda d: print(d.line(), flush=True))
        if sys.stdout.isatty():
            with LiveProgress(kw["seconds"]) as live:
                if plan is not None:
                    kw["on_fault"] = lambda d: live.bar.console.print(d.line(), markup=False)
                result = runner.run(args.scenario, host, args.data, on_progress=live, **kw)
        else:
            result = runner.run(args.scenario, host, args.data, **kw)
        records.record_result(out, result)
        print(runner.table(result))
        if shape is not None:  # one row per simulated hour
            from loadtest import day
            print("\n" + day.table(day.hourly(day.read(out / "day"), shape), shape))
        print(f"Locust's CSV files and HTML report: {out} (report.html)")
        print(f"run record: {out} (run.json, results.json, plot.png; "
              f"idsim load --again {out}, idsim report)")
        if plan is not None:
            return 0 if all(d.error is None for d in result.faults) else 1
        return 0 if result.total.failures == 0 else 1
    finally:
        if cluster is not None:
            cluster.stop()


def day_setup(args, out: Path, kw: dict):
    """``--scenario day``'s shape; sets the run's length and Locust options in
    ``kw``. UserError if the cluster in --data does not serve the synthetic population."""
    from loadtest.day import DayShape
    from resolver.config import DayConfig
    from topology.tomlio import load as load_topology
    if load_topology(Path(args.data) / "topology.toml").population != "full":
        raise UserError("--scenario day needs the synthetic population: restart the cluster "
                        "with idsim up --population full")
    conf = DayConfig()
    share = conf.share if args.share is None else args.share
    compress = conf.compress if args.compress is None else args.compress
    try:
        shape = DayShape.of(conf.national_daily, share, compress)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    (out / "day").mkdir(exist_ok=True)
    workers = max(1, args.processes)
    kw["seconds"] = shape.duration + 2  # the schedule ends at shape.duration
    kw["extra"] = ["--day-share", repr(share / workers), "--day-compress", repr(compress),
                   "--idsim-day-log", str(out / "day")]
    print(f"a national day: {shape.daily:,.0f} requests ({share:g} of "
          f"{conf.national_daily:,}) in {shape.duration:,.0f} s, peak {shape.peak_rate():,.0f} "
          f"req/s", flush=True)
    if shape.peak_rate() / workers > 4000:
        print("WARNING: one Locust process tops out near 4-5k requests/s: lower --share or "
              "--compress, or add --processes", flush=True)
    return shape


def add_load_command(sub) -> None:
    from loadtest.runner import SCENARIOS
    from topology.presets import PRESETS
    load = sub.add_parser("load", help="run a Locust scenario and summarise it")
    load.add_argument("--scenario", default="mixed", choices=list(SCENARIOS),
                      help="resolve, register, mixed (both and an operator), ramp (mixed "
                           "under a stepped load shape) or day (a national day, compressed); "
                           "default mixed")
    load.add_argument("--time", default=parse_duration("30s"), type=duration_arg,
                      help="how long, e.g. 30s or 2m (default 30s)")
    load.add_argument("--users", type=int, default=50,
                      help="simulated users (default 50; the ramp scenario sets its own)")
    load.add_argument("--spawn-rate", type=float, default=50, help="users started per second")
    load.add_argument("--processes", type=int, default=1, help="Locust processes (master/workers)")
    load.add_argument("--host", help="recursive node URL (default: the cluster's in --data)")
    load.add_argument("--data", default=DEFAULT_DATA,
                      help="the cluster's data directory; runs are kept in <data>/runs/")
    load.add_argument("--preset", default="guangzhou-2021", choices=list(PRESETS),
                      help="when a cluster must be started: its preset")
    load.add_argument("--port", type=int, default=None,
                      help="when a cluster must be started: its recursive node's port (default: "
                           f"the one --data last ran on, else {DEFAULT_PORT})")
    load.add_argument("--demo", type=int, default=None,
                      help="when a cluster must be started: demo identifiers per enterprise")
    load.add_argument("--faults", metavar="PLAN",
                      help="a fault plan (TOML, e.g. plans/secondary-down.toml) to run alongside; "
                           "the summary gives each phase's success rate, p50 and p99")
    load.add_argument("--seed", type=int, default=None,
                      help="seed of the users' draws (default: a new one, kept in the run record)")
    load.add_argument("--again", metavar="RUN",
                      help="repeat a recorded run (runs/<time>, in --data): its scenario, "
                           "users, time, seed and fault plan (replacing any given here), against "
                           "the cluster in --data")
    # the open model
    load.add_argument("--rate", default=None,
                      help="open model: requests start at this rate (req/s, Poisson) for --time, "
                           "whatever the answers take; or steps: steps:1000,2000,3000@10s")
    load.add_argument("--rate-shape", metavar="FILE", default=None,
                      help="open model: a TOML rate shape ([[step]] rate = N, for = \"10s\")")
    load.add_argument("--compress", type=float, default=None,  # --scenario day
                      help="day scenario: simulated seconds per wall second, the day's volume "
                           "kept (default 60: a day in 24 minutes)")
    load.add_argument("--share", type=float, default=None,
                      help="day scenario: this network's share of the national ~150 million "
                           "resolutions a day (default 0.002)")
    load.set_defaults(func=cmd_load)
