"""One host process of ``idsim up``: ``python -m topology.host --topology T --data D NAMES…``.

It starts the named nodes with ``topology.wiring.start_nodes`` (the one wiring), with the
effective config the launcher wrote (``--config``, normally ``<data>/config.toml``), then
prints JSON event lines on stdout for its launcher (``seeded``, ``ready``, ``error``) and
serves until SIGINT/SIGTERM. Logs go to stderr, which the launcher points at a file.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from resolver import config as configuration
from resolver import server
from topology.tomlio import load
from topology.wiring import start_nodes


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
    running = await start_nodes(topo, args.nodes, config, data_dir=data_dir, logins=logins,
                                store=args.store,
                                progress=lambda code, n: emit("seeded", node=code, count=n),
                                reuse_port=args.reuse_port)
    emit("ready", nodes=args.nodes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.close()


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
    p.add_argument("--config", help="the effective config (TOML sections), as the launcher "
                                     "wrote it; absent: the defaults")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (over --config)")
    p.add_argument("--recursive-port", type=int, help="recursive node: HTTP port override")
    p.add_argument("nodes", nargs="+")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # parser errors: answered 400
    server.install_uvloop()
    try:
        config = host_config(args)
        if args.parent_pipe:
            watch_parent(config.host.stop_timeout)
        asyncio.run(worker_main(args, config))
    except Exception as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
