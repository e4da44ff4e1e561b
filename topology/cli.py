"""``idsim``: run nodes and talk to them.

    idsim up                     start the Guangzhou network with demo data (Ctrl-C stops it)
    idsim status [--watch]       every node: up/ready, requests/s, p99, hit ratio, records
    idsim down                   stop a cluster started elsewhere
    idsim load --scenario mixed --time 30s   Locust against the cluster (starts one if needed)
    idsim resolve 88.118.8/SN000000000
    idsim register 88.118.8/X --url https://… --user 300:0.NA/88.118.8 --secret …
    idsim node --code 88.118     run one secondary node on its own
    idsim host --topology T --nodes top,recursive   run one host's share of a network

A mistake in what was asked (a malformed option or handle, a node that cannot be reached)
is one line on stderr and exit code 2, never a traceback (``UserError``, ``Parser.error``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from resolver import config as configuration
from resolver import server
from resolver.store.base import store_kind  # --store lmdb|memory|redis-cluster://
from topology.cli_client import DEFAULT_DATA, UserError, add_client_commands
from topology.cli_config import add_config_args, add_config_command, effective_config
from topology.cli_host import add_host_command  # nodes on several hosts
from topology.cli_import import add_import_command
from topology.cli_fault import add_fault_command
from topology.cli_load import DEFAULT_PORT, add_load_command
from topology.cli_report import add_report_command  # idsim report RUN_A RUN_B (run records)
from topology.cli_capacity import add_capacity_command  # idsim capacity
from topology.cluster import (Cluster, default_processes, last_port, read_state, running_pids,
                              stop_recorded)
from topology.presets import PRESETS, get_preset
from topology.supervisor import OnExit
from topology.wan_presets import wan_flags

WIDE = 10_000  # columns of a console that is not a terminal: lines are never cut


# ------------------------------------------------------------------ entry point

class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, where to look) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {one_line(message)} (see: {self.prog} --help)\n")


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def sample_arg(text: str) -> float:
    """argparse type: a share of requests, 0 < x <= 1."""
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share in (0, 1], e.g. 0.01")
    return share


def add_access_log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--access-log", action="store_true",
                   help="write one JSON line per request to <data>/logs/access-*.jsonl "
                        "(rotated: [http] access_max_bytes, access_backups)")
    p.add_argument("--access-log-sample", type=sample_arg, metavar="SHARE",
                   help="with --access-log, write only this share of requests, e.g. 0.01 "
                        "(= --set http.access_sample=SHARE)")


def add_wan_arg(p: argparse.ArgumentParser) -> None:  # issue 10: the WAN model
    p.add_argument("--wan", metavar="china|off|FILE.toml",
                   help="delay node-to-node messages as between the nodes' cities: a preset "
                        "(china), off, or a TOML file of [wan] values and [matrix.CityA] "
                        "CityB = ms delays (= [wan] in the config; default off)")


def access_log_flags(args) -> dict:
    """The config layer ``--access-log-sample`` makes (see ``effective_config``)."""
    return {} if args.access_log_sample is None else {
        "--access-log-sample": {"http": {"access_sample": args.access_log_sample}}}


def wide_console():
    """rich's console: a terminal's own width, else one that never cuts or wraps (rich gives
    a pipe or a file 80 columns, which cut the node tables' URLs)."""
    from rich.console import Console
    console = Console()
    return console if console.is_terminal else Console(width=WIDE)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="idsim", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    node = sub.add_parser("node", help="run one secondary node")
    node.add_argument("--code", default="88.118", help="node code (prefix it homes)")
    node.add_argument("--enterprise", action="append", default=[],
                      help="enterprise prefix to allocate and seed (repeatable)")
    node.add_argument("--demo", type=int, default=1000, help="demo identifiers per enterprise")
    node.add_argument("--host", default="127.0.0.1", help="address to serve on")
    node.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port to serve on")
    node.add_argument("--data", default=DEFAULT_DATA, help="data directory")
    node.add_argument("--store", default="lmdb", type=store_kind,
                      help="lmdb: durable, in <data>/<code>; memory: gone when it stops; "
                           "redis-cluster://HOST:PORT,...: a Redis Cluster (README)")
    node.add_argument("--case-sensitive", action="store_true",
                      help="tell handles apart by ASCII case (Handle.Net folds it by default)")
    node.add_argument("--processes", type=int, default=None,
                      help="processes serving the node's port (SO_REUSEPORT; default: one per "
                           "core, 1 with --store memory)")
    add_access_log_args(node)
    add_wan_arg(node)
    add_config_args(node)
    node.set_defaults(func=cmd_node)

    up = sub.add_parser("up", help="start the local network with demo data")
    up.add_argument("--preset", default="guangzhou-2021", choices=list(PRESETS),
                    help="the network to run (default guangzhou-2021; mini: 3 nodes)")
    up.add_argument("--topology", help="a topology TOML file instead of a preset")
    up.add_argument("--host", default="127.0.0.1", help="address every node serves on")
    up.add_argument("--port", type=int, default=None,
                    help="recursive node's HTTP port; the others follow it (RPC ports +1000) "
                         f"(default: the one --data last ran on, else {DEFAULT_PORT})")
    up.add_argument("--data", default=DEFAULT_DATA, help="data directory (kept across restarts)")
    up.add_argument("--demo", type=int, default=None,
                    help="demo identifiers per enterprise (preset default: 10)")
    up.add_argument("--workers", type=int, default=None,
                    help="groups of nodes in separate host processes: the top-level node with "
                         "the secondary nodes for 2 or less, else the top-level node alone and "
                         "the secondary nodes spread over the rest (default: 2, or one per "
                         "core with --node-processes 1)")
    up.add_argument("--store", default="lmdb", type=store_kind,
                    help="lmdb: durable, in <data>/<node>; memory: gone when it stops; "
                         "redis-cluster://HOST:PORT,...: a Redis Cluster (README)")
    up.add_argument("--recursive-processes", type=int, default=default_processes(),
                    help="processes sharing the recursive node's ports (SO_REUSEPORT; "
                         "default: one per core)")
    up.add_argument("--node-processes", type=int, default=None,
                    help="processes sharing each other node's ports (SO_REUSEPORT; default: "
                         "one per core, 1 with --store memory; 1: one process per node)")
    up.add_argument("--answer-cache", type=int, default=None,
                    help="recursive node's answer cache, entries (0: off, every resolve asks "
                         "the serving node; delegations stay cached); = --set "
                         "cache.answer_entries=N")
    up.add_argument("--recursive-cities", metavar="CITY,CITY,…",  # places (issue 10)
                    help="one recursive node per city, each with its own ports: 'recursive' "
                         "in the first, recursive-<city> in the others, e.g. Guangzhou,Beijing"
                         ",Shanghai,Chengdu (default: the topology's; presets: Guangzhou)")
    up.add_argument("--mirrors", action="store_true",  # issue 11: topology.mirrors
                    help="give every secondary node one read-only mirror in another city "
                         "(Beijing, Shanghai, Wuhan, Chongqing in turn) and add a standby "
                         "top-level node in Nanjing, each in host processes of their own")
    up.add_argument("--tls", action="store_true",
                    help="serve every node's HTTP port over HTTPS, with certificates from a "
                         "cluster CA kept in <data>/pki (clients trust <data>/pki/ca.crt)")
    up.add_argument("--on-exit", default=OnExit.RESTART, choices=[o.value for o in OnExit],
                    help="when a host process exits: restart it with back-off (default), keep "
                         "the others serving without it, or stop the whole network")
    up.add_argument("--population", choices=["full", "demo", "none"],
                    help="what the secondary nodes serve: demo seeded demo records (--demo "
                         "per enterprise); full the preset's synthetic population (6.99 "
                         "billion for guangzhou-2021), computed on demand; none neither "
                         "(default: the topology file's [network] population, else demo)")
    add_access_log_args(up)
    add_wan_arg(up)
    add_config_args(up)
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("status", help="every node: up/ready, requests/s, p99, cache hit "
                                       "ratio, records")
    st.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data directory")
    st.add_argument("--json", action="store_true",
                    help="cluster.json with each node's figures, as JSON")
    st.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    st.add_argument("--interval", type=float, default=None,
                    help="seconds between the scrapes rates are over (default: the config's "
                         "observe.status_interval)")
    st.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop the running cluster")
    down.add_argument("--data", default=DEFAULT_DATA,
                      help="the data directory of the cluster to stop")
    down.set_defaults(func=cmd_down)

    add_client_commands(sub)
    add_load_command(sub)
    add_capacity_command(sub)
    add_config_command(sub)
    add_host_command(sub)
    add_fault_command(sub)
    add_import_command(sub)
    add_report_command(sub)
    return p


def cmd_node(args) -> int:
    from topology.cli_node import serve_node
    try:
        config = effective_config(args, {**access_log_flags(args), **wan_flags(args)})
    except (configuration.ConfigError, ValueError) as exc:
        print(f"idsim node: {exc}", file=sys.stderr)
        return 2
    try:
        return serve_node(args, config)
    except OSError as exc:  # the port is taken or not ours to bind, the data not writable
        raise UserError(f"cannot run node {args.code} on {args.host}:{args.port}: {exc}") from None


def up_processes(args) -> tuple[int, int]:
    """``idsim up``'s (node processes, workers) from its options and their defaults."""
    memory = args.store == "memory"
    nodes = args.node_processes or (1 if memory else default_processes())
    if nodes < 1 or args.recursive_processes < 1 or (args.workers or 1) < 1:
        raise ValueError("--node-processes, --recursive-processes and --workers are at least 1")
    if memory and nodes > 1:
        raise ValueError("--store memory keeps each process's records to itself: "
                         "--node-processes 1 with it")
    return nodes, args.workers or (2 if nodes > 1 else default_processes())


def cmd_up(args) -> int:
    from rich.progress import Progress
    from rich.table import Table

    from topology.tomlio import load

    console = wide_console()
    running = running_pids(Path(args.data), console.print)
    if running:
        console.print(f"[red]a cluster is already running from {args.data}[/] (pids "
                      f"{', '.join(map(str, running))}); stop it with: "
                      f"idsim down --data {args.data}")
        return 1
    try:
        topo = load(args.topology) if args.topology else get_preset(args.preset)
    except (OSError, ValueError) as exc:  # TopologyError too
        raise UserError(f"cannot read the topology: {exc}") from None
    if args.recursive_cities:  # before with_ports: their ports follow the secondaries'
        from topology import places
        cities = [c.strip() for c in args.recursive_cities.split(",") if c.strip()]
        unknown = [c for c in cities if not places.known(c)]
        if unknown or not cities:
            what = f"unknown city {unknown[0]!r}" if unknown else "no city given"
            raise UserError(f"--recursive-cities: {what} (known: "
                            f"{', '.join(sorted(places.CITIES))}; a topology file may place a "
                            "node anywhere with lat and lon)")
        topo = topo.with_recursive_cities(cities)
    if args.mirrors:  # issue 11: before with_ports, their ports follow every other node's
        from topology.mirrors import with_mirrors
        topo = with_mirrors(topo)
    port = args.port if args.port is not None else last_port(args.data)
    if args.port is None and port is not None:
        console.print(f"port {port}: the one {args.data} last ran on (--port to choose)")
    topo = topo.with_ports(port or DEFAULT_PORT, host=args.host)
    if args.tls:
        topo = topo.with_scheme("https")
    if args.demo is not None:
        topo = replace(topo, identifiers_per_enterprise=args.demo)
    if args.population is not None:  # full | demo | none
        topo = replace(topo, population=args.population)
    flags = {} if args.answer_cache is None else {
        "--answer-cache": {"cache": {"answer_entries": args.answer_cache}}}
    flags.update(access_log_flags(args))
    flags.update(wan_flags(args))
    try:
        config = effective_config(args, flags)
    except (configuration.ConfigError, ValueError) as exc:
        console.print(f"[red]idsim up:[/] {exc}")
        return 2
    try:
        node_processes, workers = up_processes(args)
    except ValueError as exc:
        console.print(f"[red]idsim up:[/] {exc}")
        return 2
    cluster = Cluster(topo, Path(args.data), workers=workers, store=args.store,
                      recursive_processes=args.recursive_processes, config=config,
                      node_processes=node_processes,
                      on_exit=OnExit(args.on_exit), access_log=args.access_log,
                      say=lambda msg: console.print(msg, style="yellow", markup=False,
                                                    highlight=False, soft_wrap=True))
    total = len(topo.enterprises) * topo.identifiers_per_enterprise * (topo.population == "demo")
    t0 = time.perf_counter()
    processes = len(cluster.plan())
    console.print(f"starting [bold]{topo.name}[/]: {len(topo.node_names())} nodes in "
                  f"{processes} processes, data in {args.data}")
    # idsim down (SIGTERM) stops as Ctrl-C does, from the start on
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("seeding demo identifiers", total=total or 1)

            def on_event(ev: dict) -> None:
                if ev["event"] == "seeded":
                    bar.advance(task, ev["count"])
            try:
                cluster.start(on_event)
            except RuntimeError as exc:
                console.print(f"[red]could not start:[/] {exc}")
                return 1
        state = json.loads(cluster.state_path.read_text())
        table = Table(title=f"{topo.name}: ready in {time.perf_counter() - t0:.1f} s")
        for col in ("node", "role", "industry", "city", "HTTP", "RPC"):
            table.add_column(col)
        for n in state["nodes"]:
            table.add_row(n["name"], n["role"], n.get("industry", ""), n.get("city", ""),
                          n["httpUrl"], n["rpc"])
        console.print(table)
        rec = state["recursiveUrl"]
        curl = f"curl --cacert {state['caFile']}" if "caFile" in state else "curl"
        console.print(f"resolve through the recursive node: [bold]{rec}[/]")
        for ex in state["examples"]:
            console.print(f"  {curl} {rec}/api/handles/{ex}")
        for name, url in list(state["recursiveUrls"].items())[1:]:  # --recursive-cities
            console.print(f"  or through {name}: {url}", markup=False, highlight=False)
        console.print(f"network statistics: {curl} {state['topUrl']}/api/stats")
        console.print(f"logins (prefix, user, secret, node URL): {state['logins']}")
        if "caFile" in state:
            console.print(f"HTTPS: clients trust the cluster CA {state['caFile']} "
                          f"(pyhandle: HTTPS_verify=that path)")
        console.print(f"logs: {Path(args.data) / 'logs'}"
                      + (" (access logs: access-host-*.jsonl)" if args.access_log else ""))
        console.print("Ctrl-C stops the cluster; its data stays for the next start.")
        while not cluster.failed():
            cluster.supervisor.failed.wait(0.5)
        console.print("[red]a host process exited; stopping[/]")
        return_code = 1
    except KeyboardInterrupt:
        return_code = 0
    for sig in (signal.SIGINT, signal.SIGTERM):  # the stop itself is not interrupted
        signal.signal(sig, signal.SIG_IGN)
    console.print("stopping…")
    cluster.stop()
    return return_code


def cmd_status(args) -> int:
    from topology.status_view import run_status
    return run_status(args)


def cmd_down(args) -> int:
    """Stop the cluster running from --data: its launcher, or if that is gone the host
    processes it recorded (those still ours); cluster.json is removed either way."""
    from resolver.config import Config

    data = Path(args.data)
    state = read_state(data)
    if state is None:
        print(f"no cluster running from {args.data}", file=sys.stderr)
        return 1
    pids = stop_recorded(data, state, Config().host.stop_timeout)
    print(f"stopped the cluster from {args.data} (pids {', '.join(map(str, pids))})" if pids
          else f"nothing was running from {args.data}; removed its stale cluster.json")
    return 0


def _run(coro) -> int:
    server.install_uvloop()
    asyncio.run(coro)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"idsim {args.cmd}: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
