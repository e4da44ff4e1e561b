#!/usr/bin/env python
"""Server CPU per request: ``python benchmarks/cpu_per_request.py [--seconds 4] [--rounds 3]``.

Requests per second swing with whatever else this shared 2-core box runs; the CPU a server
process spends per request (user + system, all its threads, divided by the requests wrk got
answered) holds far better, so this is the figure to watch when changing a hot path.

It runs one ``idsim node`` (LMDB, durable writes) and, as the reference measured in the same
rounds, aiohttp's low-level server answering a fixed Handle-like JSON: the floor of any aiohttp
handler. For each, a resolve (GET) and a registration (PUT with a body); rounds interleave;
medians are printed with the ratio to the reference. ``--metrics-off`` adds a second node
started with ``--set metrics.enabled=0`` and prints what the metrics cost per request (the
ratio of the node with metrics on to the one without).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs, wrk  # noqa: E402
from resolver.auth import basic_header  # noqa: E402

REFERENCE_SERVER = """
import asyncio, sys, uvloop
from aiohttp import web
BODY = (b'{"responseCode":1,"handle":"88.118.8/SN000000042","values":[{"index":1,"type":"URL",'
        b'"data":{"format":"string","value":"https://ex.com/SN000000042"},"ttl":86400,'
        b'"timestamp":"2026-11-23T02:54:53Z"}]}')
HEADERS = {"Content-Type": "application/json;charset=utf-8"}
async def handler(request):
    if request.can_read_body:
        await request.read()
        return web.Response(body=b'{"responseCode":1}', headers=HEADERS, status=201)
    return web.Response(body=BODY, headers=HEADERS)
async def main():
    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""
PUT_LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{"values":[{"index":1,"type":"URL","data":"https://ex.com/' .. n .. '"}]}'
  return wrk.format("PUT", "/api/handles/88.118.8/REF-" .. n,
                    {["Content-Type"] = "application/json"}, body)
end
"""


def cpu_us_per_request(pid: int, url: str, seconds: float, script: str, env: dict) -> float:
    proc = psutil.Process(pid)
    before = sum(proc.cpu_times()[:2])
    res = wrk.run(url, seconds, script=script, env=env, threads=1, connections=32)
    spent = sum(proc.cpu_times()[:2]) - before
    if res.non2xx or any(res.socket_errors.values()):
        raise RuntimeError(f"{url}: {res.non2xx} error answers, socket errors "
                           f"{res.socket_errors}: the CPU figure would not be of real work")
    return spent / max(1, res.requests) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--metrics-off", action="store_true",
                   help="also measure a node with metrics.enabled=0 (the metrics' cost)")
    args = p.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-cpu-"))
    (tmp / "put.lua").write_text(PUT_LUA)
    try:
        ref_port, node_port = procs.free_port(), procs.free_port()
        ref = procs.spawn([sys.executable, "-c", REFERENCE_SERVER, str(ref_port)])
        node = procs.spawn([sys.executable, "-m", "topology.cli", "node", "--code", "88.118",
                            "--enterprise", "88.118.8", "--demo", "10000", "--port",
                            str(node_port), "--data", str(tmp / "node")],
                           stdout=subprocess.DEVNULL, cwd=HERE.parent)
        procs.wait_port(ref_port, proc=ref)
        procs.wait_port(node_port, timeout=60, proc=node)
        bare = None
        if args.metrics_off:  # the same node without metrics, to measure their cost
            bare_port = procs.free_port()
            bare = procs.spawn([sys.executable, "-m", "topology.cli", "node", "--code", "88.118",
                                "--enterprise", "88.118.8", "--demo", "10000", "--port",
                                str(bare_port), "--data", str(tmp / "bare"),
                                "--set", "metrics.enabled=0"],
                               stdout=subprocess.DEVNULL, cwd=HERE.parent)
            procs.wait_port(bare_port, timeout=60, proc=bare)
        login = json.loads((tmp / "node" / "logins.json").read_text())["enterprises"][0]
        auth = basic_header(login["username"], login["secret"]).removeprefix("Basic ")
        ref_url, node_url = f"http://127.0.0.1:{ref_port}", f"http://127.0.0.1:{node_port}"
        runs = {  # name → (pid, url, wrk script, env)
            "reference GET": (ref.pid, ref_url + "/api/handles/88.118.8/SN000000042", None, {}),
            "resolve GET": (node.pid, node_url, str(HERE / "resolve.lua"),
                            {"IDSIM_PREFIXES": "88.118.8", "IDSIM_COUNT": "10000"}),
            "reference PUT": (ref.pid, ref_url, str(tmp / "put.lua"), {}),
            "register PUT": (node.pid, node_url, str(HERE / "register.lua"),
                             {"IDSIM_PREFIX": "88.118.8", "IDSIM_AUTH": auth}),
        }
        rows = [("reference GET", "reference GET"), ("resolve GET", "reference GET"),
                ("reference PUT", "reference PUT"), ("register PUT", "reference PUT")]
        if bare is not None:
            bare_login = json.loads((tmp / "bare" / "logins.json").read_text())["enterprises"][0]
            bare_auth = basic_header(bare_login["username"],
                                     bare_login["secret"]).removeprefix("Basic ")
            bare_url = f"http://127.0.0.1:{bare_port}"
            runs["resolve GET, metrics off"] = (bare.pid, bare_url, str(HERE / "resolve.lua"),
                                                {"IDSIM_PREFIXES": "88.118.8",
                                                 "IDSIM_COUNT": "10000"})
            runs["register PUT, metrics off"] = (bare.pid, bare_url, str(HERE / "register.lua"),
                                                 {"IDSIM_PREFIX": "88.118.8",
                                                  "IDSIM_AUTH": bare_auth})
            rows += [("resolve GET, metrics off", "reference GET"),
                     ("register PUT, metrics off", "reference PUT"),
                     ("resolve GET", "resolve GET, metrics off"),
                     ("register PUT", "register PUT, metrics off")]
        got: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, (pid, url, script, env) in runs.items():
                env = dict(env, IDSIM_TAG=f"cpu{r}")
                got[name].append(cpu_us_per_request(pid, url, args.seconds, script, env))
            procs.log(f"round {r + 1}/{args.rounds}: " +
                      ", ".join(f"{n} {v[-1]:.0f} µs" for n, v in got.items()))
        med = {name: statistics.median(v) for name, v in got.items()}
        procs.log(f"\n{'server CPU per request (median)':<34}{'µs':>8}{'ratio':>10}  to")
        for name, ref_name in rows:
            procs.log(f"{name:<34}{med[name]:>8.0f}{med[name] / med[ref_name]:>9.2f}×  "
                      f"{ref_name}")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
