"""``idsim node``: one secondary node on its own, through the one wiring.

The node is a topology of one secondary node (``standalone``: no top-level node to register
with, no RPC port), started by ``topology.wiring.start_nodes`` like every other node, in
``--processes`` processes (default one per core) sharing its port (``SO_REUSEPORT``) and
its LMDB store: the first serves first, then starts the others one by one (``Replica``). Its
logins live in ``<data>/logins.json`` as ``{"node_admin": {...}, "enterprises": [...]}``;
a restart reads them back, so secrets survive restarts (the store keeps only their hashes).
Its log (``topology.logs``) is ``<data>/logs/node-<code>.log``; with ``--access-log`` each
request is a JSON line in ``<data>/logs/access-node-<code>.jsonl``.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from resolver import gc_settings, health, server
from resolver.access_log import access_logs
from resolver.config import Config
from resolver.ratelimit import per_process
from topology import demo, logs, model
from topology.cli_client import UserError
from topology.cluster import default_processes, make_logins
from topology.ports import _bind_problem
from topology.wiring import start_nodes

STANDALONE_INDUSTRY = model.Industry("general", "General")
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent exits
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


def processes_of(args) -> int:
    """How many processes serve the node (``--processes``; default one per core, 1 for a
    memory store, which is one process's own)."""
    memory = args.store == "memory"
    n = args.processes if args.processes is not None else 1 if memory else default_processes()
    if n < 1:
        raise UserError("--processes is at least 1")
    if memory and n > 1:
        raise UserError("--store memory keeps each process's records to itself: --processes 1")
    return n


def serve_node(args, config: Config) -> int:
    """``idsim node``: the logins first (every process uses the same), then ``--processes - 1``
    forked processes that wait until this one serves the node, then serve its port too
    (``SO_REUSEPORT``), each telling this one when it is ready. They die with this process
    (``PR_SET_PDEATHSIG``) and are stopped (SIGTERM) when it stops."""
    n = processes_of(args)
    if n > 1 and (why := _bind_problem(args.host, args.port)):  # SO_REUSEPORT would share
        raise UserError(f"cannot run node {args.code} on {args.host}:{args.port}: {why}")
    if n > 1:  # each process keeps its own failed-login counts: each allows its share
        config = config.with_values("--processes", {"auth": per_process(config.auth, n)})
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    logins = node_logins(args, data)
    children: list[Replica] = [Replica.fork(i, args, config, logins) for i in range(1, n)]
    try:
        server.install_uvloop()
        asyncio.run(run_node(args, config, logins, children))
    except RuntimeError as exc:  # a replica did not start
        raise UserError(str(exc)) from None
    finally:
        for child in children:
            child.stop(config.host.stop_timeout)
    return 0


def node_logins(args, data: Path) -> dict:
    """The node's logins (kept from ``<data>/logins.json``), written back there."""
    path = data / "logins.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    topo = standalone_topology(args.code, args.enterprise, args.host, args.port, args.demo)
    logins = make_logins(topo, _cluster_logins(saved))
    admin = logins["nodes"][args.code]
    path.write_text(json.dumps({
        "node_admin": {"username": admin["username"], "secret": admin["secret"]},
        "enterprises": [{"prefix": p, "username": logins["enterprises"][p]["username"],
                         "secret": logins["enterprises"][p]["secret"]}
                        for p in args.enterprise]}, indent=2))
    path.chmod(0o600)
    return logins


@dataclass
class Replica:
    """A forked process serving the node's port too: ``go`` starts it, ``ready`` says it is."""
    pid: int
    go: int      # write end: one byte lets it start
    ready: int   # read end: one byte when it serves, EOF when it failed

    @classmethod
    def fork(cls, index: int, args, config: Config, logins: dict) -> "Replica":
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the replica: never returns
            code = 1
            try:
                os.close(go_w)
                os.close(ready_r)
                die_with(parent)
                health.BOOT = secrets.token_hex(8)  # another process: /healthz tells it apart
                if os.read(go_r, 1):  # EOF: the first process failed or is gone
                    server.install_uvloop()
                    asyncio.run(run_node(args, config, logins, [], replica=index,
                                         ready_fd=ready_w))
                    code = 0
            except BaseException:  # noqa: BLE001 - reported in the log; the parent says so
                log.exception("process %d of node %s failed", index, args.code)
            finally:
                os._exit(code)
        os.close(go_r)
        os.close(ready_w)
        return cls(pid, go_w, ready_r)

    async def start(self, timeout: float) -> None:
        """Let it start and wait until it serves (RuntimeError if it fails or is late)."""
        os.write(self.go, b"g")
        loop = asyncio.get_running_loop()
        try:
            got = await asyncio.wait_for(loop.run_in_executor(None, os.read, self.ready, 1),
                                         timeout)
        except asyncio.TimeoutError:
            got = b""
        if not got:
            raise RuntimeError(f"process {self.pid} serving the node did not start; see its log")

    def stop(self, timeout: float) -> None:
        for fd in (self.go, self.ready):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded wait for a child process
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def die_with(parent: int) -> None:
    """Have the kernel SIGTERM this process when its parent exits (Linux), and stop now if
    it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent stops it (Replica.stop)
        pass
    if os.getppid() != parent:
        os._exit(0)


async def run_node(args, config: Config, logins: dict, replicas: list[Replica], *,
                   replica: int = 0, ready_fd: int | None = None) -> None:
    """Serve the node in this process; the first process also prints what it serves, then
    starts the ``replicas``; a replica tells the first through ``ready_fd``."""
    data = Path(args.data)
    topo = standalone_topology(args.code, args.enterprise, args.host, args.port, args.demo)
    added = 0
    log_path = data / "logs" / f"node-{args.code}.log"
    logs.setup([args.code], path=log_path)
    tag = f".{replica}" if replica else ""
    access = data / "logs" / f"access-node-{args.code}{tag}.jsonl" if args.access_log else None
    log.info("starting process %d of %d: store %s%s", replica + 1, len(replicas) + 1,
             args.store, f", access log {access}" if access else "")

    def seeded(_code: str, count: int) -> None:
        nonlocal added
        added += count
    shared = bool(replicas) or replica > 0
    running = await start_nodes(topo, [args.code], config, data_dir=data, logins=logins,
                                store=args.store, standalone=True, reuse_port=shared,
                                case_sensitive=args.case_sensitive, progress=seeded,
                                access_log=access and access_logs(access, config.http))
    gc_settings.apply(config.host)  # the node built and seeded: freeze it, collect less often
    try:
        for child in replicas:
            await child.start(config.host.ready_timeout)
        if ready_fd is not None:
            os.write(ready_fd, b"r")
        url = f"http://{args.host}:{server.bound_port(running.runners[0])}"
        log.info("ready: serving %s", url)
        if replica == 0:
            node = running.nodes[args.code]
            held = ", ".join(f"{node.store.count(node.key(p))} under {p}" for p in args.enterprise)
            print(f"seeded {added} identifiers" + (f" ({held} in all)" if held else ""))
            print(f"secondary node {args.code} serving {url}  (store {node.store.url}; "
                  f"{len(replicas) + 1} process{'es' if replicas else ''})", flush=True)
            print(f"  log: {log_path}" + (f"; access log: {access}" if access else ""),
                  flush=True)
            if args.enterprise:
                print(f"  try: curl {url}/api/handles/{args.enterprise[0]}/{demo.suffix(0)}")
                print(f"  logins (prefix, user, secret): {data / 'logins.json'}")
        await wait_for_signal()
        if replica == 0:
            print("stopping…")
        log.info("stopping")
    finally:
        await running.close()
    log.info("stopped")


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
