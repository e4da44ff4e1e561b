"""``idsim node``: one secondary node on its own, through the one wiring.

The node is a topology of one secondary node (``standalone``: no top-level node to register
with, no RPC port), started by ``topology.wiring.start_nodes`` like every other node. Its
logins live in ``<data>/logins.json`` as ``{"node_admin": {...}, "enterprises": [...]}``;
a restart reads them back, so secrets survive restarts (the store keeps only their hashes).
Its log (``topology.logs``) is ``<data>/logs/node-<code>.log``; with ``--access-log`` each
request is a JSON line in ``<data>/logs/access-node-<code>.jsonl``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from resolver import server
from resolver.access_log import access_logs
from resolver.config import Config
from topology import demo, logs, model
from topology.cluster import make_logins
from topology.wiring import start_nodes

STANDALONE_INDUSTRY = model.Industry("general", "General")
log = logging.getLogger("idsim.node")


def standalone_topology(code: str, enterprises: list[str], host: str, port: int,
                        per_enterprise: int) -> model.Topology:
    """A topology of one secondary node serving ``enterprises``; the other addresses are
    placeholders a standalone node never uses."""
    address = model.NodeAddress(host, port, port)
    unused = model.NodeAddress(host, 0, 0)
    spec = model.SecondarySpec(code, f"node {code}", "", STANDALONE_INDUSTRY.code, address)
    return model.Topology(
        name=f"node-{code}", seed=0, top=unused, recursive=unused,
        industries=(STANDALONE_INDUSTRY,), secondaries=(spec,),
        enterprises=tuple(model.Enterprise(p, p, code, STANDALONE_INDUSTRY.code)
                          for p in enterprises),
        identifiers_per_enterprise=per_enterprise)


def _cluster_logins(saved: dict | None) -> dict | None:
    """``idsim node``'s logins.json in the shape ``make_logins`` keeps secrets from."""
    if not saved or not isinstance(saved.get("enterprises"), list):
        return None
    admin = saved.get("node_admin") or {}
    code = admin.get("username", "").rpartition("/")[2]
    return {"nodes": {code: admin} if code else {},
            "enterprises": {e["prefix"]: e for e in saved["enterprises"] if "prefix" in e}}


async def run_node(args, config: Config) -> None:
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    path = data / "logins.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    topo = standalone_topology(args.code, args.enterprise, args.host, args.port, args.demo)
    logins = make_logins(topo, _cluster_logins(saved))
    added = 0
    log_path = data / "logs" / f"node-{args.code}.log"
    logs.setup([args.code], path=log_path)
    access = data / "logs" / f"access-node-{args.code}.jsonl" if args.access_log else None
    log.info("starting: store %s%s", args.store, f", access log {access}" if access else "")

    def seeded(_code: str, count: int) -> None:
        nonlocal added
        added += count
    running = await start_nodes(topo, [args.code], config, data_dir=data, logins=logins,
                                store=args.store, standalone=True,
                                case_sensitive=args.case_sensitive, progress=seeded,
                                access_log=access and access_logs(access, config.http))
    node = running.nodes[args.code]
    held = ", ".join(f"{node.store.count(node.key(p))} under {p}" for p in args.enterprise)
    print(f"seeded {added} identifiers" + (f" ({held} in all)" if held else ""))
    url = f"http://{args.host}:{server.bound_port(running.runners[0])}"
    admin = logins["nodes"][args.code]
    path.write_text(json.dumps({
        "node_admin": {"username": admin["username"], "secret": admin["secret"]},
        "enterprises": [{"prefix": p, "username": logins["enterprises"][p]["username"],
                         "secret": logins["enterprises"][p]["secret"]}
                        for p in args.enterprise]}, indent=2))
    path.chmod(0o600)
    log.info("ready: serving %s", url)
    print(f"secondary node {args.code} serving {url}  (store {node.store.url})", flush=True)
    print(f"  log: {log_path}" + (f"; access log: {access}" if access else ""), flush=True)
    if args.enterprise:
        print(f"  try: curl {url}/api/handles/{args.enterprise[0]}/{demo.suffix(0)}")
        print(f"  logins (prefix, user, secret): {path}")
    await wait_for_signal()
    print("stopping…")
    log.info("stopping")
    await running.close()
    log.info("stopped")


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
