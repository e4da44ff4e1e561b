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
        print(f"running scenario {args.scenario!r} against {host} for {args.time:.0f} s "
              f"({args.users} users, {args.processes} Locust process(es))…", flush=True)
        kw = dict(seconds=args.time, users=args.users, spawn_rate=args.spawn_rate,
                  processes=args.processes, out=out, extra=["--idsim-seed", str(args.seed)],
                  rate=rate)
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
            with LiveProgress(args.time) as live:
                if plan is not None:
                    kw["on_fault"] = lambda d: live.bar.console.print(d.line(), markup=False)
                result = runner.run(args.scenario, host, args.data, on_progress=live, **kw)
        else:
            result = runner.run(args.scenario, host, args.data, **kw)
        records.record_result(out, result)
        print(runner.table(result))
        print(f"Locust's CSV files and HTML report: {out} (report.html)")
        print(f"run record: {out} (run.json, results.json, plot.png; "
              f"idsim load --again {out}, idsim report)")
        if plan is not None:
            return 0 if all(d.error is None for d in result.faults) else 1
        return 0 if result.total.failures == 0 else 1
    finally:
        if cluster is not None:
            cluster.stop()


def add_load_command(sub) -> None:
    from loadtest.runner import SCENARIOS
    from topology.presets import PRESETS
    load = sub.add_parser("load", help="run a Locust scenario and summarise it")
    load.add_argument("--scenario", default="mixed", choices=list(SCENARIOS),
                      help="resolve, register, mixed (both and an operator) or ramp (mixed "
                           "under a stepped load shape); default mixed")
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
    load.set_defaults(func=cmd_load)
