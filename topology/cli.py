"""``idsim``: run nodes and talk to them.

    idsim up                     start the Guangzhou network with demo data (Ctrl-C stops it)
    idsim status [--watch]       every node: up/ready, requests/s, p99, hit ratio, records
    idsim down                   stop a cluster started elsewhere
    idsim load --scenario mixed --time 30s   Locust against the cluster (starts one if needed)
    idsim resolve 88.118.8/SN000000000
    idsim register 88.118.8/X --url https://… --user 300:0.NA/88.118.8 --secret …
    idsim node --code 88.118     run one secondary node on its own
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from resolver import config as configuration
from resolver import auth, identifiers, server
from resolver.roles import Role
from topology import pki
from topology.cli_config import add_config_args, add_config_command, effective_config
from topology.cluster import Cluster, plan_workers, read_state, running_pids, stop_recorded
from topology.supervisor import OnExit

DEFAULT_DATA = "idsim-data"


# ------------------------------------------------------------------ client commands

def http(method: str, url: str, body: dict | None = None, user: str | None = None,
         secret: str | None = None, data: str | None = None) -> tuple[int, dict]:
    """One request; ``https://`` verified with the cluster CA of the data directory ``data``
    when it has one (``idsim up --tls``), else the system's roots."""
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Accept", "application/json")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if user:
        req.add_header("Authorization", auth.basic_header(user, secret))
    try:
        with urllib.request.urlopen(req, timeout=10,
                                    context=pki.client_context_for(data) if data else None
                                    ) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"message": raw.decode(errors="replace")[:300]}


def cmd_resolve(args) -> int:
    if args.via is None:  # the cluster's recursive node running from --data, or the default
        state = read_state(args.data)
        args.via = state["recursiveUrl"] if state else "http://127.0.0.1:8000"
    t = time.perf_counter()
    status, doc = http("GET", f"{args.via}/api/handles/{args.handle}", data=args.data)
    ms = (time.perf_counter() - t) * 1000
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    print(f"HTTP {status} in {ms:.1f} ms via {args.via}", file=sys.stderr)
    return 0 if status == 200 else 1


def cmd_register(args) -> int:
    """PUT an identifier at the node serving its prefix. With a cluster running from --data,
    the node and the enterprise's login are found there; --via/--user/--secret override."""
    prefix = args.handle.partition("/")[0]
    via, user, secret = args.via, args.user, args.secret
    state = read_state(args.data)
    if state is not None:
        homes = [n for n in state["nodes"] if n["role"] == Role.SECONDARY
                 and identifiers.is_under(prefix, n["name"])]
        if via is None and homes:
            via = max(homes, key=lambda n: len(n["name"]))["httpUrl"]
        login = json.loads(Path(state["logins"]).read_text())["enterprises"].get(prefix)
        if login and user is None:
            user, secret = login["username"], secret or login["secret"]
    if via is None or user is None or secret is None:
        print("idsim register needs --via, --user and --secret (or a cluster running from "
              "--data that serves the prefix and holds its login)", file=sys.stderr)
        return 2
    values = [{"index": 1, "type": "URL", "data": {"format": "string", "value": args.url}}]
    for i, kv in enumerate(args.value, start=2):
        vtype, _, val = kv.partition("=")
        values.append({"index": i, "type": vtype, "data": {"format": "string", "value": val}})
    q = "" if args.overwrite else "?overwrite=false"
    status, doc = http("PUT", f"{via}/api/handles/{args.handle}{q}", {"values": values},
                       user, secret, data=args.data)
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    print(f"HTTP {status} from {via} as {user}", file=sys.stderr)
    return 0 if status in (200, 201) else 1


# ------------------------------------------------------------------ entry point

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="idsim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    node = sub.add_parser("node", help="run one secondary node")
    node.add_argument("--code", default="88.118", help="node code (prefix it homes)")
    node.add_argument("--enterprise", action="append", default=[],
                      help="enterprise prefix to allocate and seed (repeatable)")
    node.add_argument("--demo", type=int, default=1000, help="demo identifiers per enterprise")
    node.add_argument("--host", default="127.0.0.1")
    node.add_argument("--port", type=int, default=8000)
    node.add_argument("--data", default=DEFAULT_DATA, help="data directory")
    node.add_argument("--store", default="lmdb", choices=["lmdb", "memory"],
                      help="lmdb: durable, in <data>/<code>; memory: gone when it stops")
    node.add_argument("--case-sensitive", action="store_true",
                      help="tell handles apart by ASCII case (Handle.Net folds it by default)")
    add_config_args(node)
    node.set_defaults(func=cmd_node)

    up = sub.add_parser("up", help="start the local network with demo data")
    up.add_argument("--preset", default="guangzhou-2021", help="guangzhou-2021 or mini")
    up.add_argument("--topology", help="a topology TOML file instead of a preset")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000,
                    help="recursive node's HTTP port; the others follow it (RPC ports +1000)")
    up.add_argument("--data", default=DEFAULT_DATA, help="data directory (kept across restarts)")
    up.add_argument("--demo", type=int, default=None,
                    help="demo identifiers per enterprise (preset default: 10)")
    up.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="host processes (default: one per core)")
    up.add_argument("--store", default="lmdb", choices=["lmdb", "memory"])
    up.add_argument("--recursive-processes", type=int, default=1,
                    help="processes sharing the recursive node's port (SO_REUSEPORT)")
    up.add_argument("--answer-cache", type=int, default=None,
                    help="recursive node's answer cache, entries (0: off, every resolve asks "
                         "the serving node; delegations stay cached); = --set "
                         "cache.answer_entries=N")
    up.add_argument("--tls", action="store_true",
                    help="serve every node's HTTP port over HTTPS, with certificates from a "
                         "cluster CA kept in <data>/pki (clients trust <data>/pki/ca.crt)")
    up.add_argument("--on-exit", default=OnExit.RESTART, choices=[o.value for o in OnExit],
                    help="when a host process exits: restart it with back-off (default), keep "
                         "the others serving without it, or stop the whole network")
    add_config_args(up)
    up.set_defaults(func=cmd_up)

    load = sub.add_parser("load", help="run a Locust scenario and summarise it")
    load.add_argument("--scenario", default="mixed", choices=["resolve", "register", "mixed", "ramp"])
    load.add_argument("--time", default="30s", help="how long, e.g. 30s or 2m")
    load.add_argument("--users", type=int, default=50)
    load.add_argument("--spawn-rate", type=float, default=50)
    load.add_argument("--processes", type=int, default=1, help="Locust processes (master/workers)")
    load.add_argument("--host", help="recursive node URL (default: the cluster's in --data)")
    load.add_argument("--data", default=DEFAULT_DATA)
    load.add_argument("--preset", default="guangzhou-2021", help="when a cluster must be started")
    load.add_argument("--port", type=int, default=8000)
    load.add_argument("--demo", type=int, default=None)
    load.set_defaults(func=cmd_load)

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
    down.add_argument("--data", default=DEFAULT_DATA)
    down.set_defaults(func=cmd_down)

    res = sub.add_parser("resolve", help="resolve an identifier")
    res.add_argument("handle")
    res.add_argument("--via", help="a node's URL (default: the recursive node of the cluster "
                                   "running from --data, else http://127.0.0.1:8000)")
    res.add_argument("--data", default=DEFAULT_DATA, help="a cluster's data directory")
    res.set_defaults(func=cmd_resolve)

    reg = sub.add_parser("register", help="register (or replace) an identifier")
    reg.add_argument("handle")
    reg.add_argument("--url", required=True)
    reg.add_argument("--value", action="append", default=[], metavar="TYPE=TEXT")
    reg.add_argument("--user", help="e.g. 300:0.NA/88.118.8 (default: from the cluster's logins)")
    reg.add_argument("--secret", default=os.environ.get("IDSIM_SECRET"))
    reg.add_argument("--overwrite", action="store_true")
    reg.add_argument("--via", help="the serving node's URL (default: found in the cluster)")
    reg.add_argument("--data", default=DEFAULT_DATA, help="the running cluster's data directory")
    reg.set_defaults(func=cmd_register)

    add_config_command(sub)
    return p


def cmd_node(args) -> int:
    from topology.cli_node import run_node
    try:
        config = effective_config(args)
    except (configuration.ConfigError, ValueError) as exc:
        print(f"idsim node: {exc}", file=sys.stderr)
        return 2
    return _run(run_node(args, config))


def cmd_up(args) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from topology.tomlio import load
    from topology.presets import get_preset

    console = Console()
    running = running_pids(Path(args.data), console.print)
    if running:
        console.print(f"[red]a cluster is already running from {args.data}[/] (pids "
                      f"{', '.join(map(str, running))}); stop it with: "
                      f"idsim down --data {args.data}")
        return 1
    topo = load(args.topology) if args.topology else get_preset(args.preset)
    topo = topo.with_ports(args.port, host=args.host)
    if args.tls:
        topo = topo.with_scheme("https")
    if args.demo is not None:
        topo = replace(topo, identifiers_per_enterprise=args.demo)
    flags = {} if args.answer_cache is None else {
        "--answer-cache": {"cache": {"answer_entries": args.answer_cache}}}
    try:
        config = effective_config(args, flags)
    except (configuration.ConfigError, ValueError) as exc:
        console.print(f"[red]idsim up:[/] {exc}")
        return 2
    cluster = Cluster(topo, Path(args.data), workers=args.workers, store=args.store,
                      recursive_processes=args.recursive_processes, config=config,
                      on_exit=OnExit(args.on_exit),
                      say=lambda msg: console.print(msg, style="yellow", markup=False,
                                                    highlight=False, soft_wrap=True))
    total = len(topo.enterprises) * topo.identifiers_per_enterprise
    t0 = time.perf_counter()
    processes = len(plan_workers(topo, args.workers, args.recursive_processes))
    console.print(f"starting [bold]{topo.name}[/]: {len(topo.secondaries) + 2} nodes in "
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
        console.print(f"network statistics: {curl} {state['topUrl']}/api/stats")
        console.print(f"logins (prefix, user, secret, node URL): {state['logins']}")
        if "caFile" in state:
            console.print(f"HTTPS: clients trust the cluster CA {state['caFile']} "
                          f"(pyhandle: HTTPS_verify=that path)")
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


def cmd_load(args) -> int:
    """Run a Locust scenario against the cluster in --data, starting one if none runs there."""
    from loadtest import runner
    from topology.presets import get_preset

    seconds = parse_duration(args.time)
    cluster = None
    if not running_pids(Path(args.data), print):
        topo = get_preset(args.preset).with_ports(args.port)
        if args.demo is not None:
            topo = replace(topo, identifiers_per_enterprise=args.demo)
        print(f"starting {topo.name} in {args.data} for the load run…", flush=True)
        cluster = Cluster(topo, Path(args.data), store="lmdb")
        cluster.start()
    try:
        host = args.host or read_state(args.data)["recursiveUrl"]
        print(f"running scenario {args.scenario!r} against {host} for {seconds:.0f} s "
              f"({args.users} users, {args.processes} Locust process(es))…", flush=True)
        result = runner.run(args.scenario, host, args.data, seconds=seconds, users=args.users,
                            spawn_rate=args.spawn_rate, processes=args.processes)
        print(runner.table(result))
        return 0 if result.total.failures == 0 else 1
    finally:
        if cluster is not None:
            cluster.stop()


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


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
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
