#!/usr/bin/env python
"""A secondary node on Redis Cluster against one on LMDB, in the same run:
``python benchmarks/redis_vs_lmdb.py [--seconds 4] [--rounds 3] [--demo 10000]``.

It starts a local 3-master Redis Cluster (``tests/redis_cluster.py``: Debian's redis-server,
AOF with ``appendfsync always``) and two ``idsim node`` processes seeded alike (``--demo``
identifiers under 88.118.8), one ``--store lmdb``, one ``--store redis-cluster://...``. wrk
GETs random demo identifiers from each (``benchmarks/resolve.lua``, 1 thread, 32
connections); rounds interleave the two. Printed per store, medians over the rounds:
resolves per second, the node process's CPU per resolve (user + system), and for Redis the
three redis-servers' CPU per resolve too; then the ratios Redis / LMDB. Resolve rate on this
shared 2-core machine swings with the other load; CPU per request holds better.
"""
from __future__ import annotations

import argparse
import statistics
import time
import sys
import tempfile
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs, readme_sections, wrk  # noqa: E402
from benchmarks.cpu_per_request import start_node  # noqa: E402
from tests.redis_cluster import LocalRedisCluster  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def measure(node_pid: int, redis_pids: list[int], url: str, seconds: float, env: dict) -> dict:
    before_node, before_redis = cpu_seconds([node_pid]), cpu_seconds(redis_pids)
    res = wrk.run(url, seconds, script=str(HERE / "resolve.lua"), env=env, threads=1,
                  connections=32)
    if res.non2xx or any(res.socket_errors.values()):
        raise RuntimeError(f"{url}: {res.non2xx} error answers, socket errors "
                           f"{res.socket_errors}: the figures would not be of real work")
    n = max(1, res.requests)
    return {"rps": res.rps, "node_us": (cpu_seconds([node_pid]) - before_node) / n * 1e6,
            "redis_us": (cpu_seconds(redis_pids) - before_redis) / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--demo", type=int, default=10000, help="identifiers seeded in each node")
    p.add_argument("--readme", action="store_true",
                   help="write the figures into benchmarks/README.md (its marked section)")
    args = p.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-redis-"))
    cluster = None
    try:
        cluster = LocalRedisCluster(tmp / "redis").create()
        procs.log(f"redis cluster: {cluster.url}")
        redis_pids = [proc.pid for proc in cluster.procs]
        env = {"IDSIM_PREFIXES": "88.118.8", "IDSIM_COUNT": str(args.demo)}
        nodes = {}
        for name, store in (("lmdb", "lmdb"), ("redis-cluster", cluster.url)):
            pid, url, _ = start_node(tmp, name, "--store", store, "--demo", str(args.demo))
            nodes[name] = (pid, url)
        for name, (pid, url) in nodes.items():  # warm: connections, page cache
            wrk.run(url, 1, script=str(HERE / "resolve.lua"), env=env, threads=1, connections=32)
        got: dict[str, list[dict]] = {name: [] for name in nodes}
        for r in range(args.rounds):
            for name, (pid, url) in nodes.items():
                got[name].append(measure(pid, redis_pids if name != "lmdb" else [], url,
                                         args.seconds, env))
            procs.log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {v[-1]['rps']:.0f}/s {v[-1]['node_us']:.0f} µs" for n, v in got.items()))
        med = {name: {k: statistics.median(m[k] for m in runs) for k in runs[0]}
               for name, runs in got.items()}
        procs.log(f"\n{'resolve GET (median)':<22}{'req/s':>10}{'node µs/req':>14}"
                  f"{'redis µs/req':>14}")
        for name, m in med.items():
            procs.log(f"{name:<22}{m['rps']:>10.0f}{m['node_us']:>14.1f}{m['redis_us']:>14.1f}")
        lm, rc = med["lmdb"], med["redis-cluster"]
        both = rc["node_us"] + rc["redis_us"]
        procs.log(f"\nredis-cluster / lmdb: resolve rate {rc['rps'] / lm['rps']:.2f}×, "
                  f"node CPU per resolve {rc['node_us'] / lm['node_us']:.2f}×, "
                  f"node + redis CPU per resolve {both / lm['node_us']:.2f}×")
        if args.readme:
            rows = "\n".join(f"| {name} | {m['rps']:,.0f} | {m['node_us']:.1f} | {m['redis_us']:.1f} |"
                             for name, m in med.items())
            readme_sections.write("redis_vs_lmdb", f"""\
## Redis Cluster store against LMDB (`benchmarks/redis_vs_lmdb.py`)

{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, `python benchmarks/redis_vs_lmdb.py
--seconds {args.seconds:g} --rounds {args.rounds}`: one `idsim node` on each store
({args.demo:,} identifiers), the Redis one on a local 3-master cluster (AOF, `appendfsync
always`), wrk in interleaved rounds, medians.

| store | resolves/s | node µs CPU per resolve | redis-servers µs CPU per resolve |
| --- | ---: | ---: | ---: |
{rows}

**Redis Cluster / LMDB: resolve rate {rc['rps'] / lm['rps']:.2f}×, node CPU per resolve
{rc['node_us'] / lm['node_us']:.2f}×, node + redis CPU {both / lm['node_us']:.2f}×.**
""")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
