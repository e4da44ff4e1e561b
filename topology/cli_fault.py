"""``idsim fault …``: set, clear and list faults of the cluster running from ``--data``.

``down NODE``, ``refuse NODE``, ``slow NODE --delay 200ms [--jitter 50ms]``, ``errors NODE
--rate 0.1``, ``partition A B``, ``kill NODE``, ``restart NODE``, ``clear [NODE]``, ``list``;
each of the first five takes ``--for DURATION`` (the fault ends by itself). The work is
``topology.fault_control`` (which plans call too); this module is only the command line.
A user's mistake is one line and exit 2 (``UserError``).
"""
from __future__ import annotations

import argparse
import json

from resolver.faults import FaultError, parse_duration
from topology.cli_client import DEFAULT_DATA, UserError
from topology.cli_faultplan import add_run_command


def duration_arg(text: str) -> str:
    """argparse type: a duration as ``resolver.faults.parse_duration`` reads it (kept as text)."""
    try:
        parse_duration(text)
    except FaultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def rate_arg(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 < rate <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share in (0, 1], e.g. 0.1")
    return rate


def add_fault_command(sub) -> None:
    fault = sub.add_parser("fault", help="make nodes of the running cluster misbehave "
                                         "(down, refuse, slow, errors, partition, kill, restart)")
    kinds = fault.add_subparsers(dest="fault", required=True)

    def command(name: str, help: str, nodes: int = 1, timed: bool = True):
        p = kinds.add_parser(name, help=help)
        if nodes == 1:
            p.add_argument("node", help="the node: recursive, top or a secondary's code "
                                        "(e.g. 88.118)")
        elif nodes == 2:
            p.add_argument("node", help="one side, e.g. recursive")
            p.add_argument("peer", help="the other side, e.g. 88.118")
        p.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data "
                                                             "directory")
        if timed:
            p.add_argument("--for", dest="duration", type=duration_arg, metavar="DURATION",
                           help="end the fault by itself after this long, e.g. 30s "
                                "(default: until idsim fault clear)")
        p.set_defaults(func=cmd_fault)
        return p

    command("down", "the node stops answering: requests hang until the client's timeout")
    command("refuse", "the node's listening sockets close: connections are refused")
    slow = command("slow", "every request and RPC call to the node waits longer")
    slow.add_argument("--delay", type=duration_arg, required=True,
                      help="added delay, e.g. 200ms or 1.5s")
    slow.add_argument("--jitter", type=duration_arg,
                      help="plus up to this much more, uniformly at random, e.g. 50ms")
    errs = command("errors", "a share of HTTP requests answer 503, of RPC calls an error")
    errs.add_argument("--rate", type=rate_arg, required=True,
                      help="the share of requests that fail, in (0, 1], e.g. 0.1")
    command("partition", "RPC between two nodes fails, both ways", nodes=2)
    command("kill", "SIGKILL the host process running the node (all its nodes); the "
                    "launcher restarts it per idsim up --on-exit", timed=False)
    command("restart", "stop the host process running the node and wait until the launcher "
                       "has started it again (needs idsim up --on-exit restart)", timed=False)
    clear = kinds.add_parser("clear", help="end every fault, or those of one node")
    clear.add_argument("node", nargs="?", help="only this node's faults (and partitions "
                                               "touching it)")
    clear.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data "
                                                             "directory")
    clear.set_defaults(func=cmd_fault)
    lst = kinds.add_parser("list", help="the active faults")
    lst.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data directory")
    lst.add_argument("--json", action="store_true", help="as JSON")
    lst.set_defaults(func=cmd_fault)
    add_run_command(kinds)  # idsim fault run PLAN (topology.cli_faultplan)


def spec_of(args) -> dict:
    """The fault spec (``resolver.faults.fault_from`` shape) a command line asks for."""
    spec = {"kind": args.fault, "node": args.node}
    if getattr(args, "peer", None):
        spec["peer"] = args.peer
    if getattr(args, "delay", None):
        spec["delay"] = args.delay
    if getattr(args, "jitter", None):
        spec["jitter"] = args.jitter
    if getattr(args, "rate", None) is not None:
        spec["rate"] = args.rate
    if getattr(args, "duration", None):
        spec["duration"] = args.duration
    return spec


def describe(f: dict) -> str:
    extra = {"slow": f"+{f.get('delay', 0) * 1000:.0f} ms"
                     + (f" ±{f['jitter'] * 1000:.0f} ms" if f.get("jitter") else ""),
             "errors": f"rate {f.get('rate', 0):g}", "partition": f"with {f.get('peer')}"}
    text = f"{f['node']}: {f['kind']}"
    if f["kind"] in extra:
        text += f" ({extra[f['kind']]})"
    return text


def cmd_fault(args) -> int:
    from topology import fault_control
    if args.fault == "list":
        faults = fault_control.active(args.data)
        if args.json:
            print(json.dumps(faults, indent=2))
        else:
            print("\n".join(map(describe, faults)) if faults else "no active faults")
        return 0
    if args.fault == "clear":
        gone = fault_control.clear(args.data, args.node)
        print(f"cleared {len(gone)} fault{'s' if len(gone) != 1 else ''}"
              + (": " + "; ".join(map(describe, gone)) if gone else ""))
        return 0
    done = fault_control.apply(args.data, spec_of(args))
    if args.fault in ("kill", "restart"):
        pids = " ".join(map(str, done["pids"]))
        print(f"{args.fault}: host process{'es' if len(done['pids']) > 1 else ''} {pids} "
              f"({' '.join(done['nodes'])})"
              + (f", serving again as pid {' '.join(map(str, done['newPids']))}"
                 if "newPids" in done else ""))
    else:
        print(f"set: {describe(done['fault'])}")
    return 0


__all__ = ["add_fault_command", "cmd_fault", "spec_of", "UserError"]
