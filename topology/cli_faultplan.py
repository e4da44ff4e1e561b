"""``idsim fault run PLAN``: run a fault plan against the cluster running from ``--data``.

The plan (``topology.faultplan``) starts when the command does; each event is printed as it
happens (seconds from the start, what was applied or cleared, and the error if the cluster
refused it). Ctrl-C stops the plan and clears every fault it set that is still in effect.
Exit code: 0 when every event was applied, 1 when one failed, 130 when interrupted, 2 for a
plan that cannot run (one line on stderr, naming the entry). ``add_run_command`` adds it to
the ``idsim fault`` subcommands.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from resolver.clock import SYSTEM, Clock
from topology.cli_client import DEFAULT_DATA, UserError
from topology.cluster import read_state
from topology.faultplan import PlanError, check_nodes, load_plan, run_plan


def make_applier(data_dir: str):
    """The applier for the cluster in ``data_dir`` (``topology.plan_applier``)."""
    from topology.plan_applier import ClusterApplier, FaultsUnavailable
    try:
        return ClusterApplier(data_dir)
    except FaultsUnavailable as exc:
        raise UserError(str(exc)) from None


def say_now(text: str) -> None:
    """Print a line at once, piped or not (events are shown as they happen)."""
    print(text, flush=True)


def cmd_fault_run(args, applier=None, clock: Clock = SYSTEM, say=say_now) -> int:
    """Run the plan ``args.plan`` on the cluster in ``args.data``; ``applier`` and ``clock``
    are the real ones unless given (tests)."""
    try:
        plan = load_plan(args.plan)
    except PlanError as exc:
        raise UserError(str(exc)) from None
    state = read_state(Path(args.data))
    if state is None:
        raise UserError(f"no cluster running from {args.data}: start one with idsim up "
                        f"--data {args.data}")
    try:
        check_nodes(plan, {n["name"] for n in state["nodes"]})
    except PlanError as exc:
        raise UserError(str(exc)) from None
    applier = applier if applier is not None else make_applier(args.data)
    say(f"fault plan {args.plan}: {len(plan.faults)} fault(s) over {plan.end:g} s on the "
        f"cluster in {args.data} (Ctrl-C clears them and stops)")
    try:
        done = asyncio.run(run_plan(plan, applier, clock, on_event=lambda d: say(d.line())))
    except KeyboardInterrupt:
        say("stopped early: the faults in effect were cleared")
        return 130
    failed = [d for d in done if d.error is not None]
    say(f"plan done: {len(done)} event(s)" + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def add_run_command(sub) -> None:
    """``run PLAN [--data]`` under the ``idsim fault`` subparsers."""
    run = sub.add_parser("run", help="run a fault plan (a TOML timeline of faults) against "
                                     "the running cluster, printing each event")
    run.add_argument("plan", help="the plan's TOML file, e.g. plans/secondary-down.toml")
    run.add_argument("--data", default=DEFAULT_DATA,
                     help="the running cluster's data directory")
    run.set_defaults(func=cmd_fault_run)
