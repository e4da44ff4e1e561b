"""``idsim capacity``: the highest arrival rate the cluster in ``--data`` holds within an SLO.

Runs ``loadtest.capacity.search`` with open-model steps (``idsim load --rate``'s machinery,
``loadtest.runner.run(rate=...)``) against the running cluster's recursive node, printing
each step as it ends. Everything goes under ``<data>/runs/<time>/``: each step's Locust files
(``step-NN-<rate>/``), ``capacity.json`` (inputs, steps, result) and ``capacity.png``
(corrected and uncorrected p99 against the rate asked, the SLO and the capacity). The engine
is Locust: one process, or its distributed mode (a master and N workers, ``--processes`` or
one per ``[capacity] per_process`` req/s up to one per core); each step says which.
Exit 0, or 1 when ``--min-rate`` is given and the capacity found is below it (for CI);
2 for bad arguments or no running cluster.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from topology.cli_client import DEFAULT_DATA, UserError
from topology.cluster import read_state

HEAD = (f"{'rate':>8}{'sent/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 unc.':>10}{'errors':>8}"
        f"{'late':>7}{'Locust':>8}  engine")


def _ms(text: str) -> float:
    from resolver.faults import FaultError, parse_duration
    try:
        return parse_duration(text) * 1000
    except FaultError as exc:
        raise UserError(f"--max-p99: {exc}") from None


def step_line(s) -> str:
    def f(v):
        return "-" if v is None else f"{v:.1f}"
    mark = "held" if s.held else f"FAILED: {s.why}"
    return (f"{s.rate:>8.0f}{s.sent_rate:>9.0f}{f(s.p50):>9}{f(s.p99):>9}"
            f"{f(s.p99_uncorrected):>10}{s.error_ratio:>8.1%}{s.late:>7}{s.generator_cpu:>8.0%}"
            f"  {s.engine}  {mark}")


def plot(cap, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [s.rate for s in cap.steps]
    ax.plot(xs, [s.p99 or float("nan") for s in cap.steps], "o-",
            label="p99 corrected (from intended start)")
    ax.plot(xs, [s.p99_uncorrected or float("nan") for s in cap.steps], "s--",
            label="p99 uncorrected (from send)")
    ax.axhline(cap.max_p99, color="red", lw=1, label=f"SLO {cap.max_p99:g} ms")
    if cap.rate:
        ax.axvline(cap.rate, color="green", lw=1, label=f"capacity {cap.rate:g} req/s")
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate asked (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("idsim capacity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_capacity(args) -> int:
    """Step the arrival rate up until p99 or errors pass their limits; report the best."""
    from loadtest import capacity, records, runner
    from loadtest.openmodel import constant
    from resolver.config import Config

    max_p99 = _ms(args.max_p99)
    config = Config().capacity
    for key in ("start_rate", "step_rate", "max_rate", "step_seconds", "max_error_ratio"):
        if getattr(args, key) is not None:
            config = replace(config, **{key: getattr(args, key)})
    if not (config.start_rate > 0 and config.step_rate > 0 and config.step_seconds > 0):
        raise UserError("--start-rate, --step-rate and --step-time must be positive")
    state = read_state(Path(args.data))
    if state is None:
        raise UserError(f"no cluster running from {args.data} (start one: idsim up)")
    host = args.host or state["recursiveUrl"]
    out = runner.run_dir(args.data)
    records.write_inputs(out, args.data, kind="capacity", host=host, options={
        "max_p99": max_p99, "max_errors": config.max_error_ratio, "min_rate": args.min_rate,
        "start_rate": config.start_rate, "step_rate": config.step_rate,
        "max_rate": config.max_rate, "step_time": config.step_seconds,
        "processes": args.processes, "users": args.users})  # the run record (its inputs)
    print(f"capacity of {host}: steps of {config.step_seconds:g} s from "
          f"{config.start_rate:g} req/s by {config.step_rate:g}, SLO p99 <= {max_p99:g} ms "
          f"and errors <= {config.max_error_ratio:.1%}; files in {out}", flush=True)
    print(HEAD, flush=True)
    count = [0]

    def measure(rate: float, processes: int, users: int):
        count[0] += 1
        res = runner.run("resolve", host, args.data, seconds=config.step_seconds, users=users,
                         processes=processes, out=out / f"step-{count[0]:02d}-{rate:.0f}",
                         rate=constant(rate, config.step_seconds))
        o = res.open
        return capacity.StepResult(rate, o.sent / config.step_seconds, o.ms("corrected", 50),
                                   o.ms("corrected", 99), o.ms("uncorrected", 99), o.intended,
                                   o.failed, o.dropped, o.late, capacity.engine(processes),
                                   saturated=res.saturated, generator_cpu=res.cpu_per_process)

    cap = capacity.search(measure, config, max_p99, cores=os.cpu_count() or 1,
                          users=args.users, processes=args.processes,
                          on_step=lambda s: print(step_line(s), flush=True))
    doc = {"command": ["idsim", *sys.argv[1:]], "host": host, "data": str(args.data),
           "stepSeconds": config.step_seconds, "startRate": config.start_rate,
           "stepRate": config.step_rate, "maxRate": config.max_rate,
           "minRate": args.min_rate, **cap.to_dict()}
    (out / "capacity.json").write_text(json.dumps(doc, indent=2) + "\n")
    records.write_results(out, doc)
    plot(cap, out / "capacity.png")
    engines = sorted({s.engine for s in cap.steps})
    if cap.rate:
        print(f"capacity: {cap.rate:g} req/s held p99 <= {max_p99:g} ms (engine: "
              f"{'; '.join(engines)})")
    else:
        print(f"capacity: no step held p99 <= {max_p99:g} ms, not even "
              f"{config.start_rate:g} req/s")
    if cap.knee is None:
        print(f"every step up to --max-rate {config.max_rate:g} held: the capacity is higher")
    if cap.generator_bound:
        print("WARNING: the load generator was saturated in some step: add --processes; "
              "the capacity found is a lower bound")
    print(f"results: {out / 'capacity.json'}, plot: {out / 'capacity.png'}")
    if not cap.verdict(args.min_rate):
        print(f"FAILED: capacity {cap.rate:g} req/s is below --min-rate {args.min_rate:g}")
        return 1
    return 0


def add_capacity_command(sub) -> None:
    c = sub.add_parser("capacity", help="find the highest arrival rate held within a p99 SLO")
    c.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data directory")
    c.add_argument("--host", help="recursive node URL (default: the cluster's in --data)")
    c.add_argument("--max-p99", default="50ms", help="the SLO: corrected p99 (default 50ms)")
    c.add_argument("--max-errors", dest="max_error_ratio", type=float, default=None,
                   help="share of failed or dropped requests a step may have (default 0.01)")
    c.add_argument("--start-rate", type=float, default=None, help="req/s of the first step")
    c.add_argument("--step-rate", type=float, default=None, help="req/s added each step")
    c.add_argument("--max-rate", type=float, default=None, help="req/s where the search stops")
    c.add_argument("--step-time", dest="step_seconds", type=float, default=None,
                   help="seconds each step runs (default 5)")
    c.add_argument("--min-rate", type=float, default=None,
                   help="exit 1 if the capacity found is below this (for CI)")
    c.add_argument("--processes", type=int, default=None,
                   help="Locust processes (default: one per 4000 req/s, at most one per core)")
    c.add_argument("--users", type=int, default=None,
                   help="requests in flight at most (default: twice what the SLO needs)")
    c.set_defaults(func=cmd_capacity)
