"""One host process: several nodes of a topology on one event loop, each on its own ports.

``start_host`` builds and starts the named nodes (``top``, ``recursive`` or secondary node
codes), seeds demo data, registers enterprise prefixes with the top-level node and starts the
statistics reports. The cluster launcher runs it in worker processes (``python -m
topology.host``); tests run it in their own loop with ``memory:`` stores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

from aiohttp import web

from resolver import auth, errors, server
from resolver.nodes import SecondaryNode
from resolver.recursive import RecursiveNode
from resolver.resolution import Site
from resolver.rpc import RpcClient, RpcServer
from resolver.store import open_store
from resolver.top import TopNode
from resolver.web import NodeAPI
from topology import demo
from topology.model import Topology, load

log = logging.getLogger("idsim.host")
REPORT_EVERY = 1.0
REGISTER_DEADLINE = 60.0


def _addr(rpc_addr: str) -> tuple[str, int]:
    host, _, port = rpc_addr.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class Host:
    nodes: dict[str, object] = field(default_factory=dict)
    runners: list[web.BaseRunner] = field(default_factory=list)
    rpc_servers: list[RpcServer] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    clients: list[RpcClient] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()
        for rpc in self.rpc_servers:
            await rpc.close()
        for runner in self.runners:
            await runner.cleanup()
        for node in self.nodes.values():  # stores close last: nothing is writing any more
            await node.close()


def store_url(kind: str, data_dir: Path, name: str) -> str:
    return "memory:" if kind == "memory" else f"lmdb:{data_dir / name}?map_size=64"


def site_of(topo: Topology, code: str) -> Site:
    node = topo.secondary(code)
    return Site(code, node.address.http_url, node.address.rpc_addr)


async def start_host(topo: Topology, names: list[str], *, data_dir: Path, logins: dict,
                     store: str = "lmdb",
                     progress: Callable[[str, int], None] | None = None,
                     reuse_port: bool = False, clock: Callable[[], float] = time.time,
                     answer_cache: int = 1_000_000) -> Host:
    """Start the named nodes. ``logins`` holds the secrets: see ``cluster.make_logins``.

    ``reuse_port`` lets several processes serve the recursive node's HTTP port (each with its
    own cache; only the first needs its RPC port); ``answer_cache`` bounds its answer cache
    (0 turns it off: every resolve asks the secondary node, delegations stay cached).
    """
    host = Host()
    try:
        for name in names:
            if name == "top":
                node = TopNode("top", open_store(store_url(store, data_dir, "top")),
                               topo.secondaries[0].code.split(".")[0] if topo.secondaries else "88")
                await node.bootstrap(logins["top"]["secret"])
                for s in topo.secondaries:
                    await node.add_node(s.code, site_of(topo, s.code), logins["nodes"][s.code]["secret"],
                                        {"name": s.name, "industry": s.industry, "city": s.city})
                addr = topo.top
            elif name == "recursive":
                node = RecursiveNode("recursive", topo.top.rpc_addr, clock=clock,
                                     max_entries=answer_cache)
                addr = topo.recursive
            else:
                spec = topo.secondary(name)
                node = SecondaryNode(spec.code, open_store(store_url(store, data_dir, spec.code)),
                                     [spec.code])
                await node.bootstrap(logins["nodes"][spec.code]["secret"])
                await seed_node(node, topo, logins, topo.identifiers_per_enterprise, progress)
                addr = spec.address
            host.nodes[name] = node
            host.runners.append(await server.serve(NodeAPI(node), addr.host, addr.http_port,
                                                   reuse_port=reuse_port and name == "recursive"))
            if not (reuse_port and name == "recursive"):
                host.rpc_servers.append(
                    await RpcServer(node.rpc_handlers()).start(addr.host, addr.rpc_port))
        top_client = RpcClient(*_addr(topo.top.rpc_addr), timeout=10.0)
        host.clients.append(top_client)
        await register_with_top(host, topo, logins, top_client)
        for name, node in host.nodes.items():
            if node.role == "secondary":
                node.announce = partial(announce, top_client, logins["nodes"][name],
                                        site_of(topo, name))
        host.tasks.append(asyncio.get_running_loop().create_task(report_loop(host, top_client)))
    except BaseException:
        await host.close()
        raise
    return host


async def seed_node(node: SecondaryNode, topo: Topology, logins: dict, per_enterprise: int,
                    progress) -> None:
    """Allocate the node's enterprise prefixes (with their logins) and their demo identifiers."""
    admin = auth.Identity(auth.SECRET_INDEX, f"0.NA/{node.homed[0]}")
    enterprises = topo.enterprises_of(node.homed[0])
    for ent in enterprises:
        if node.values_of(f"0.NA/{ent.prefix}") is None:
            await node.create_prefix(ent.prefix, identity=admin,
                                     secret=logins["enterprises"][ent.prefix]["secret"], token=True)
    await seed(node, {ent.prefix: per_enterprise for ent in enterprises}, progress)


async def seed(node: SecondaryNode, wanted: dict[str, int], progress=None,
               batch_size: int = 5000) -> int:
    """Demo identifiers ``SN000000000…`` up to the wanted count under each prefix (those there
    are kept), registered by the node's admin in batches that span prefixes: a cluster's
    4,065 small enterprises take a few commits, not thousands. Returns how many were added."""
    admin = auth.Identity(auth.SECRET_INDEX, f"0.NA/{node.homed[0]}")
    pending: list[tuple[str, dict]] = []
    added = 0

    async def flush(items: list[tuple[str, dict]]) -> None:
        await node.register_many(items, identity=admin, overwrite=True)
        if progress:
            progress(node.homed[0], len(items))

    for prefix, count in wanted.items():
        start = node.store.count(node.key(prefix))
        while start < count:
            n = min(batch_size - len(pending), count - start)
            pending.extend(demo.demo_batch(prefix, start, n))
            start += n
            if len(pending) >= batch_size:
                await flush(pending)
                added += len(pending)
                pending = []
    if pending:
        await flush(pending)
        added += len(pending)
    return added


async def register_with_top(host: Host, topo: Topology, logins: dict, top: RpcClient) -> None:
    """Each secondary registers its enterprise prefixes at the top-level node (retrying while
    the top-level node starts, up to a deadline)."""
    deadline = time.monotonic() + REGISTER_DEADLINE
    for name, node in host.nodes.items():
        if node.role != "secondary":
            continue
        prefixes = [e.prefix for e in topo.enterprises_of(name)]
        while True:
            try:
                await announce(top, logins["nodes"][name], site_of(topo, name), *prefixes)
                break
            except errors.PeerUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def announce(top: RpcClient, creds: dict, site: Site, *prefixes: str) -> None:
    """Register prefixes served at ``site`` with the top-level node (HS_SITE records)."""
    await top.call("register_prefixes", creds["username"], creds["secret"], list(prefixes),
                   [site.prefix, site.http_url, site.rpc_addr])


async def report_loop(host: Host, top: RpcClient) -> None:
    tag = f"@{os.getpid()}"  # several processes may each run a recursive node
    while True:
        for name, node in host.nodes.items():
            if node.role != "top":
                try:
                    top.notify("report", name + tag if node.role == "recursive" else name,
                               node.report_stats())
                except Exception:  # reports are best effort; the node keeps serving
                    log.debug("report from %s failed", name, exc_info=True)
            else:
                node.report("top", {"role": "top", "resolutions": node.stats["resolutions"]})
        await asyncio.sleep(REPORT_EVERY)


# ------------------------------------------------------------------ worker process

def emit(event: str, **kw) -> None:
    print(json.dumps({"event": event, **kw}), flush=True)


async def worker_main(args) -> None:
    topo = load(args.topology)
    data_dir = Path(args.data)
    logins = json.loads((data_dir / "logins.json").read_text())
    if args.recursive_port:
        topo = replace(topo, recursive=replace(topo.recursive, http_port=args.recursive_port))
    host = await start_host(topo, args.nodes, data_dir=data_dir, logins=logins,
                            store=args.store,
                            progress=lambda code, n: emit("seeded", node=code, count=n),
                            reuse_port=args.reuse_port, answer_cache=args.answer_cache)
    emit("ready", nodes=args.nodes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await host.close()


def watch_parent(grace: float) -> None:
    """Stop this process when its launcher is gone: stdin is a pipe whose write end only the
    launcher holds, so EOF means it exited (even by SIGKILL). Then SIGTERM to ourselves (the
    clean stop; the default action while still starting) and, if that has not ended the
    process within ``grace`` seconds, exit regardless. Runs on its own thread, so a busy
    event loop does not delay it."""
    import signal
    import threading

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)
    threading.Thread(target=watch, name="parent-pipe", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m topology.host")
    p.add_argument("--parent-pipe", action="store_true",
                   help="exit when stdin reaches EOF (the launcher holds its write end)")
    p.add_argument("--topology", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--store", default="lmdb", choices=["lmdb", "memory"])
    p.add_argument("--reuse-port", action="store_true")
    p.add_argument("--answer-cache", type=int, default=1_000_000,
                   help="recursive node: answer cache entries (0 = off)")
    p.add_argument("--recursive-port", type=int, help="recursive node: HTTP port override")
    p.add_argument("nodes", nargs="+")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # parser errors: answered 400
    server.install_uvloop()
    if args.parent_pipe:
        from resolver.config import Config
        watch_parent(Config().host.stop_timeout)
    try:
        asyncio.run(worker_main(args))
    except Exception as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
