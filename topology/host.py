"""One host process of ``idsim up``: ``python -m topology.host --topology T --data D NAMES…``.

It starts the named nodes with ``topology.wiring.start_nodes`` (the one wiring), with the
effective config the launcher wrote (``--config``, normally ``<data>/config.toml``), then
prints JSON event lines on stdout for its launcher (``seeded``, ``ready``, ``error``) and
serves until SIGINT/SIGTERM. Logs (``topology.logs``: start, ready, stop, warnings and
errors, one timestamped line each) go to stderr, which the launcher points at
``<data>/logs/host-<i>.log``; with ``--access-log FILE`` every request is a JSON line there
(``resolver.access_log``). Its nodes' faults (``resolver.fault_inject``) are set through its
control API (``topology.control``, loopback, token-authenticated). A prefix one of its nodes allocates through the admin API gets its
login added to ``<data>/logins.json`` (``topology.logins``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from resolver import config as configuration
from resolver import gc_settings, server
from resolver.access_log import access_logs
from resolver.clock import SYSTEM
from resolver.fault_inject import Injector
from resolver.faults import FaultState
from resolver.roles import Role
from resolver.store.base import store_kind  # --store lmdb|memory|redis-cluster://
from topology import control
from topology import logins as logins_file
from topology import logs
from topology.tomlio import load
from topology.wiring import start_nodes

log = logging.getLogger("idsim.host")


# ------------------------------------------------------------------ worker process

def emit(event: str, **kw) -> None:
    print(json.dumps({"event": event, **kw}), flush=True)


def host_config(args) -> configuration.Config:
    """The effective config: the launcher's file (``--config``), then ``--set``."""
    layers = [(args.config, configuration.read_toml(args.config))] if args.config else []
    if args.set:
        layers.append(("--set", configuration.parse_set(args.set)))
    return configuration.layered(layers)


async def worker_main(args, config: configuration.Config) -> None:
    topo = load(args.topology)
    data_dir = Path(args.data)
    logins = json.loads((data_dir / "logins.json").read_text())
    if args.recursive_port:
        topo = replace(topo, recursive=replace(topo.recursive, http_port=args.recursive_port))
    injector = Injector(FaultState(SYSTEM, random.Random(config.faults.seed)), SYSTEM)
    log.info("starting pid %d: store %s, config %s%s", os.getpid(), args.store,
             args.config or "defaults",
             f", access log {args.access_log}" if args.access_log else "")
    running = await start_nodes(topo, args.nodes, config, data_dir=data_dir, logins=logins,
                                store=args.store,
                                progress=lambda code, n: emit("seeded", node=code, count=n),
                                reuse_port=args.reuse_port,
                                access_log=args.access_log and access_logs(args.access_log,
                                                                           config.http),
                                faults=injector)
    controls, control_url = await control.start(injector, data_dir, config.faults)  # idsim fault
    for name, node in running.nodes.items():
        if node.role == Role.SECONDARY:
            node.allocated = logins_file.recorder(data_dir, name,
                                                  topo.secondary(name).address.http_url)
    for name, runner in zip(running.nodes, running.runners):
        log.info("ready: serving http://%s:%d", *runner.addresses[0][:2], extra={"node": name})
    gc_settings.apply(config.host)  # nodes built and seeded: freeze them, collect less often
    emit("ready", nodes=args.nodes, control=control_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(sig: signal.Signals) -> None:
        log.info("stopping (%s)", sig.name)
        stop.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping, sig)
    await stop.wait()
    await control.stop(controls, data_dir)
    await running.close()
    log.info("stopped")


def watch_parent(grace: float) -> None:
    """Stop this process when its launcher is gone: stdin is a pipe whose write end only the
    launcher holds, so EOF means it exited (even by SIGKILL). Then SIGTERM to ourselves (the
    clean stop; the default action while still starting) and, if that has not ended the
    process within ``grace`` seconds, exit regardless. Runs on its own thread, so a busy
    event loop does not delay it."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        log.warning("the launcher is gone: stopping")
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
    p.add_argument("--store", default="lmdb", type=store_kind)
    p.add_argument("--reuse-port", action="store_true",
                   help="other processes serve these nodes' ports too (SO_REUSEPORT)")
    p.add_argument("--config", help="the effective config (TOML sections), as the launcher "
                                     "wrote it; absent: the defaults")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (over --config)")
    p.add_argument("--recursive-port", type=int, help="recursive node: HTTP port override")
    p.add_argument("--access-log", metavar="FILE",
                   help="write one JSON line per request to FILE (rotated; see [http] access_*)")
    p.add_argument("nodes", nargs="+")
    args = p.parse_args(argv)
    logs.setup(args.nodes)
    server.install_uvloop()
    try:
        config = host_config(args)
        if args.parent_pipe:
            watch_parent(config.host.stop_timeout)
        asyncio.run(worker_main(args, config))
    except Exception as exc:
        log.exception("failed: %s: %s", type(exc).__name__, exc)
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
