"""The scenarios the benchmark suite measures: wrk runs (resolves, registrations), the bare
aiohttp reference, Locust, CPU per request, and how many processes serve a node.

Each returns a plain dict of what it measured (``wrk.WrkResult.as_dict`` and extras), for
``results/latest.json``. Processes are started with ``benchmarks.procs`` (stopped on exit).
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import procs, wrk
from benchmarks.cpu_per_request import REFERENCE_SERVER
from resolver import auth
from topology import cluster

HERE = Path(__file__).resolve().parent
RESOLVE_LUA = str(HERE / "resolve.lua")
REGISTER_LUA = str(HERE / "register.lua")

if TYPE_CHECKING:
    from benchmarks.run import Settings


def rotate(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def node_processes() -> dict[str, int]:
    """Processes per node as a user starts them: ``cluster.default_processes()``. A tree
    without it (no multi-process nodes but the recursive one) serves the secondary node in
    one process, and counts the cores for the recursive node as ``idsim up`` did."""
    default = getattr(cluster, "default_processes", None)
    n = default() if default else max(2, os.cpu_count() or 1)
    return {"recursive": n, "secondary": n if default else 1}


def with_cpu(pids: list[int], run) -> dict:
    """``run()`` (a wrk run's dict) with ``cpu_us``: CPU µs the processes ``pids`` spent per
    request answered over it, and ``processes``: how many served it."""
    before = procs.cpu_seconds(pids)
    out = run()
    out["cpu_us"] = (procs.cpu_seconds(pids) - before) / max(1, out["requests"]) * 1e6
    out["processes"] = len(pids)
    return out


def wrk_resolve(url: str, prefixes: list[str], count: int, seconds: float) -> dict:
    res = wrk.run(url, seconds, script=RESOLVE_LUA,
                  env={"IDSIM_PREFIXES": ",".join(prefixes), "IDSIM_COUNT": str(count)})
    return res.as_dict()


def wrk_plain(url: str, seconds: float) -> dict:
    return wrk.run(url, seconds).as_dict()


def start_reference() -> tuple[object, str]:
    """The bare aiohttp+uvloop reference server (one process) and its URL."""
    port = procs.free_port()
    ref = procs.spawn([sys.executable, "-c", REFERENCE_SERVER, str(port)])
    procs.wait_port(port, proc=ref)
    return ref, f"http://127.0.0.1:{port}"


def basic_token(login: dict) -> str:
    """The base64 token of ``auth.basic_header`` (wrk's register.lua prepends "Basic ")."""
    return auth.basic_header(login["username"], login["secret"]).removeprefix("Basic ")


def wrk_register(url: str, login: dict, seconds: float, threads: int = 2,
                 connections: int = 64) -> dict:
    res = wrk.run(url, seconds, script=REGISTER_LUA, threads=threads, connections=connections,
                  env={"IDSIM_PREFIX": login["prefix"], "IDSIM_AUTH": basic_token(login),
                       "IDSIM_TAG": uuid.uuid4().hex[:10]})
    out = res.as_dict()
    out["created"] = int(res.extra.get("created", 0))
    out["other"] = int(res.extra.get("other", 0))
    out["first_other_status"] = int(res.extra.get("first_other", 0))
    out["rate"] = out["created"] / res.seconds if res.seconds else 0.0
    return out


def wrk_register_spread(targets: list[tuple[str, dict]], seconds: float) -> dict:
    """Durable single registrations at several nodes at once (one wrk each, half the
    connections): what the network takes with every core in use, as the warm resolve figure
    has. Rates add up; latencies are the worst of the nodes'."""
    with ThreadPoolExecutor(len(targets)) as pool:
        parts = list(pool.map(lambda t: wrk_register(t[0], t[1], seconds, threads=1,
                                                     connections=64 // len(targets)), targets))
    out = {k: sum(p[k] for p in parts) for k in ("created", "other", "rate")}
    out.update(p50_ms=max(p["p50_ms"] for p in parts), p99_ms=max(p["p99_ms"] for p in parts),
               non2xx=sum(p["non2xx"] for p in parts), rps=out["rate"],
               socket_errors={k: sum(p["socket_errors"].get(k, 0) for p in parts)
                              for k in set().union(*(p["socket_errors"] for p in parts))},
               nodes=parts)
    return out


def locust_resolve(url: str, data_dir: Path, s: Settings) -> dict:
    """The warm resolve load through Locust: uniform picks over every demo identifier, no
    unknowns (the same workload as wrk's resolve.lua)."""
    from loadtest import runner

    res = runner.run("resolve", url, str(data_dir), seconds=s.seconds, users=s.locust_users,
                     spawn_rate=s.locust_users, processes=1,
                     extra=["--zipf-s", "0", "--unknown-share", "0"])
    t = res.total
    return {"rps": t.rps, "requests": t.requests, "failures": t.failures, "p50_ms": t.p50,
            "p99_ms": t.p99, "cpu": res.cpu_per_process, "saturated": res.saturated,
            "users": s.locust_users, "seconds": res.seconds}


def top_stats(url: str) -> dict:
    try:
        with urllib.request.urlopen(f"{url}/api/stats", timeout=5) as resp:
            return json.loads(resp.read())
    except OSError as exc:
        return {"error": str(exc)}


def describe(name: str, r: dict, ref: float | None = None, ref_name: str = "nginx") -> str:
    rate = r.get("rate", r.get("rps")) or 0
    parts = [f"{name:<14} {rate:>10,.0f}/s"]
    if r.get("p50_ms") is not None:
        parts.append(f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
    if "non2xx" in r:
        parts.append(f"non-2xx {r['non2xx']}")
    if ref:
        parts.append(f"({rate / ref:.2f}× {ref_name})")
    return "  ".join(parts)
