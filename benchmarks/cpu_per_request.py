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
ratio of the node with metrics on to the one without). ``--recursive`` adds the recursive
node's warm path (answers from its cache): an ``idsim up --preset mini`` cluster (two, with
``--metrics-off``), measuring the CPU of the processes serving the recursive node. ``--cold``
adds the cold path: a second mini cluster whose recursive node has its answer cache off
(``--answer-cache 0``), so every GET is an RPC ``resolve`` at a secondary node; it prints the
CPU per request of the recursive node's processes, of those serving the secondaries and
their sum (ratios to the reference), and the cold path's requests/s against the warm path's
(``--cold`` measures the warm path too), rounds interleaved. ``--fast-path-off`` adds nodes
started with ``--set http.fast_path=0`` (aiohttp answers every request; ``resolver.fast_http``,
with ``--cold`` also a cold cluster so: ``resolver.fast_miss``) and prints the CPU ratio with
the fast path to without; req/s of each GET close the report. ``--register-only`` keeps the
PUT rows only, run as ``benchmarks/run.py`` runs registrations (wrk -t2 -c64, register.lua),
with their req/s (with ``--fast-path-off``: ``resolver.fast_put``'s gain).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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
    return measure(pid, url, seconds, script, env)[0]


def measure(pid: int | list[int], url: str, seconds: float, script: str, env: dict,
            connections: int = 32) -> tuple[float, float]:
    """(µs of CPU ``pid`` spends per request, req/s) over one wrk run (user + system time, all
    threads; each pid with its child processes, several pids summed: every process serving
    the node); RuntimeError when any answer was an error (the figure would not be real work)."""
    spent, rps = measure_split([pid] if isinstance(pid, int) else list(pid), url, seconds,
                               script, env, connections)
    return sum(spent), rps


def measure_split(pids: list[int], url: str, seconds: float, script: str, env: dict,
                  connections: int = 32, threads: int = 1) -> tuple[list[float], float]:
    """As ``measure``, for several processes at once: ([µs per request of each pid], req/s)."""
    before = [procs.cpu_seconds([pid]) for pid in pids]
    res = wrk.run(url, seconds, script=script, env=env, threads=threads, connections=connections)
    spent = [procs.cpu_seconds([pid]) - b for pid, b in zip(pids, before)]
    if res.non2xx or any(res.socket_errors.values()):
        raise RuntimeError(f"{url}: {res.non2xx} error answers, socket errors "
                           f"{res.socket_errors}: the CPU figure would not be of real work")
    return [s / max(1, res.requests) * 1e6 for s in spent], res.rps


def start_node(tmp: Path, name: str, *extra: str) -> tuple[int, str, str]:
    """An ``idsim node`` with 10,000 demo identifiers: its pid (its processes are that one and
    its children), URL and an enterprise login, once every process serves."""
    port = procs.free_port()
    node = procs.spawn([sys.executable, "-m", "topology.cli", "node", "--code", "88.118",
                        "--enterprise", "88.118.8", "--demo", "10000", "--port", str(port),
                        "--data", str(tmp / name), *extra],
                       stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    procs.wait_port(port, timeout=60, proc=node)
    for line in node.stdout:  # its banner comes once every process serves
        if "serving http://" in line:
            break
    login = json.loads((tmp / name / "logins.json").read_text())["enterprises"][0]
    auth = basic_header(login["username"], login["secret"]).removeprefix("Basic ")
    return node.pid, f"http://127.0.0.1:{port}", auth


def start_cluster(tmp: Path, name: str, *extra: str) -> tuple[list[list[int]], str, str]:
    """An ``idsim up --preset mini`` cluster: [pids of the processes serving its recursive
    node, pids of those serving secondary nodes], that node's URL and the demo prefixes
    (``IDSIM_PREFIXES``)."""
    port = procs.free_port(20000, 31000)
    data = tmp / name
    up = procs.spawn([sys.executable, "-m", "topology.cli", "up", "--preset", "mini",
                      "--workers", "2", "--demo", "100", "--port", str(port), "--data",
                      str(data), *extra], stdout=subprocess.DEVNULL, cwd=HERE.parent)
    deadline = time.monotonic() + 120
    while not (data / "cluster.json").exists():
        if up.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"idsim up ({name}) did not start; see {data / 'logs'}")
        time.sleep(0.2)  # polling a subprocess
    state = json.loads((data / "cluster.json").read_text())
    procs_ = state["processes"]
    recursive = [p["pid"] for p in procs_ if p["nodes"] == ["recursive"]]
    homes = [p["pid"] for p in procs_ if "recursive" not in p["nodes"]
             and any(n != "top" and "." in n for n in p["nodes"])]
    return [recursive, homes], state["recursiveUrl"], ",".join(state["prefixes"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--metrics-off", action="store_true",
                   help="also measure nodes with metrics.enabled=0 (the metrics' cost)")
    p.add_argument("--recursive", action="store_true",
                   help="also measure the recursive node's warm path (a mini cluster)")
    p.add_argument("--processes", type=int, default=None,
                   help="processes serving the node (idsim node --processes; default: its "
                        "default, one per core); their CPU is summed")
    p.add_argument("--cold", action="store_true",
                   help="also measure the cold path (answer cache off: RPC to a secondary) "
                        "and its req/s against the warm path's")
    p.add_argument("--fast-path-off", action="store_true",
                   help="also measure nodes with http.fast_path=0 (resolver.fast_http's gain)")
    p.add_argument("--register-only", action="store_true",
                   help="only the PUT rows, with wrk -t2 -c64 as benchmarks/run.py's "
                        "registrations (resolver.fast_put, the LMDB group commit)")
    args = p.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-cpu-"))
    (tmp / "put.lua").write_text(PUT_LUA)
    resolve, register = str(HERE / "resolve.lua"), str(HERE / "register.lua")
    try:
        ref_port = procs.free_port()
        ref = procs.spawn([sys.executable, "-c", REFERENCE_SERVER, str(ref_port)])
        procs.wait_port(ref_port, proc=ref)
        ref_url = f"http://127.0.0.1:{ref_port}"
        runs = {  # name → (pid, url, wrk script, env)
            "reference GET": (ref.pid, ref_url + "/api/handles/88.118.8/SN000000042", None, {}),
            "reference PUT": (ref.pid, ref_url, str(tmp / "put.lua"), {}),
        }
        rows = [("reference GET", "reference GET"), ("reference PUT", "reference PUT")]
        variants = [("", ())] + ([(", metrics off", ("--set", "metrics.enabled=0"))]
                                 if args.metrics_off else [])
        if args.fast_path_off:  # the same nodes with aiohttp answering every request
            variants.append((", fast path off", ("--set", "http.fast_path=0")))
        for suffix, extra in variants:
            processes = ("--processes", str(args.processes)) if args.processes else ()
            pid, url, auth = start_node(tmp, "node" + suffix.replace(" ", "-"), *extra,
                                        *processes)
            runs["resolve GET" + suffix] = (pid, url, resolve, {"IDSIM_PREFIXES": "88.118.8",
                                                                "IDSIM_COUNT": "10000"})
            runs["register PUT" + suffix] = (pid, url, register, {"IDSIM_PREFIX": "88.118.8",
                                                                  "IDSIM_AUTH": auth})
            rows += [("resolve GET" + suffix, "reference GET"),
                     ("register PUT" + suffix, "reference PUT")]
            if args.recursive or (args.cold and not suffix):
                groups, url, prefixes = start_cluster(tmp, "up" + suffix.replace(" ", "-"),
                                                      *extra)
                runs["recursive GET (warm)" + suffix] = (groups[:1], url, resolve, {
                    "IDSIM_PREFIXES": prefixes, "IDSIM_COUNT": "100"})
                rows.append(("recursive GET (warm)" + suffix, "reference GET"))
        colds = [("", ())] + ([(", fast path off", ("--set", "http.fast_path=0"))]
                              if args.fast_path_off else [])
        for suffix, extra in colds if args.cold else ():  # the misses: resolver.fast_miss
            groups, url, prefixes = start_cluster(tmp, "cold" + suffix.replace(" ", "-"),
                                                  "--answer-cache", "0", *extra)
            runs["recursive GET (cold)" + suffix] = (groups, url, resolve, {
                "IDSIM_PREFIXES": prefixes, "IDSIM_COUNT": "100"})
            rows.append(("recursive GET (cold)" + suffix, "reference GET"))
        if args.register_only:
            runs = {k: v for k, v in runs.items() if k.startswith(("reference PUT", "register"))}
            rows = [r for r in rows if r[0] in runs]
        shape = {"threads": 2, "connections": 64} if args.register_only else {}
        for name, (pid, url, script, env) in runs.items():  # warm caches, LMDB pages, JITs
            wrk.run(url, 1, script=script, env=dict(env, IDSIM_TAG="warm"), threads=1,
                    connections=32)
        got: dict[str, list[float]] = {name: [] for name in runs}
        split: dict[str, list[list[float]]] = {}  # per group of processes
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, (pid, url, script, env) in runs.items():
                env = dict(env, IDSIM_TAG=f"cpu{r}")
                groups = pid if isinstance(pid, list) else [[pid]]  # [[pid, ...], ...]
                each, rps = measure_split([p for g in groups for p in g], url, args.seconds,
                                          script, env, **shape)
                per_group, at = [], 0
                for g in groups:
                    per_group.append(sum(each[at:at + len(g)]))
                    at += len(g)
                got[name].append(sum(each))
                rates[name].append(rps)
                split.setdefault(name, []).append(per_group)
            procs.log(f"round {r + 1}/{args.rounds}: " +
                      ", ".join(f"{n} {v[-1]:.0f} µs" for n, v in got.items()))
        med = {name: statistics.median(v) for name, v in got.items()}
        procs.log(f"\n{'server CPU per request (median)':<34}{'µs':>8}{'ratio':>10}")
        for name, ref_name in rows:
            procs.log(f"{name:<34}{med[name]:>8.1f}{med[name] / med[ref_name]:>9.2f}×")
        if args.cold:
            name, ref_us = "recursive GET (cold)", med["reference GET"]
            parts = [statistics.median(v[i] for v in split[name]) for i in range(2)]
            procs.log(f"\n{'cold path, CPU by node':<34}{'µs':>8}{'ratio':>10}")
            for label, us in (("recursive node's processes", parts[0]),
                              ("secondary nodes' processes", parts[1]), ("both", sum(parts))):
                procs.log(f"{label:<34}{us:>8.1f}{us / ref_us:>9.2f}×")
            warm = rates["recursive GET (warm)"]
            per_round = [c / w for c, w in zip(rates[name], warm)]
            procs.log(f"\n{'req/s (median)':<34}{'cold':>8}{'warm':>10}{'ratio':>10}")
            procs.log(f"{'cold / warm':<34}{statistics.median(rates[name]):>8.0f}"
                      f"{statistics.median(warm):>10.0f}{statistics.median(per_round):>9.2f}×")
        for what in ("metrics", "fast path"):
            pairs = [name for name in runs if name + f", {what} off" in runs]
            if pairs:
                procs.log(f"\n{what + ' on / ' + what + ' off':<34}{'µs on':>8}{'µs off':>10}"
                          f"{'ratio':>10}")
                for name in pairs:
                    on, off = med[name], med[name + f", {what} off"]
                    procs.log(f"{name:<34}{on:>8.1f}{off:>10.1f}{on / off:>9.3f}×")
        procs.log(f"\n{'req/s (median)':<34}{'req/s':>8}{'ratio':>10}")
        for name, ref_name in rows:
            if "GET" in name or args.register_only:
                rps, ref_rps = statistics.median(rates[name]), statistics.median(rates[ref_name])
                procs.log(f"{name:<34}{rps:>8.0f}{rps / ref_rps:>9.2f}×")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
