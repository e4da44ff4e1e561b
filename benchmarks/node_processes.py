#!/usr/bin/env python
"""A secondary node served by 1 and by N processes: ``python benchmarks/node_processes.py
[--processes N] [--seconds 4] [--rounds 3] [--connections 64]``.

Starts the bare aiohttp reference (``cpu_per_request.REFERENCE_SERVER``, one process), an
``idsim node --processes 1`` and an ``idsim node --processes N`` (N default one per core,
``topology.cluster.default_processes``), each with 10,000 demo identifiers, and measures the
resolve path (GET, ``resolve.lua``) of each with wrk (-t1, ``--connections``) in interleaved
rounds. Prints the medians: requests per second and its ratio to the reference measured in the
same rounds, and the CPU every process of the server spends per request (user + system). On a
shared box the ratios hold better than the absolute rates; wrk needs a core of its own too.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs, wrk  # noqa: E402
from benchmarks.cpu_per_request import REFERENCE_SERVER, measure, start_node  # noqa: E402
from topology.cluster import default_processes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=default_processes())
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-processes-"))
    resolve = str(HERE / "resolve.lua")
    env = {"IDSIM_PREFIXES": "88.118.8", "IDSIM_COUNT": "10000"}
    try:
        ref_port = procs.free_port()
        ref = procs.spawn([sys.executable, "-c", REFERENCE_SERVER, str(ref_port)],
                          stdout=subprocess.DEVNULL)
        procs.wait_port(ref_port, proc=ref)
        runs = {"bare aiohttp (1 process)":
                (ref.pid, f"http://127.0.0.1:{ref_port}/api/handles/88.118.8/SN000000042",
                 None, {})}
        for n in sorted({1, args.processes}):
            pid, url, _ = start_node(tmp, f"node-{n}", "--processes", str(n))
            runs[f"idsim node --processes {n}"] = (pid, url, resolve, env)
        for pid, url, script, e in runs.values():  # warm caches, LMDB pages
            wrk.run(url, 1, script=script, env=e, threads=1, connections=args.connections)
        got: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, (pid, url, script, e) in runs.items():
                got[name].append(measure(pid, url, args.seconds, script, e, args.connections))
            procs.log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {v[-1][1]:.0f} req/s" for n, v in got.items()))
        ref_name = next(iter(runs))
        ref_rps = statistics.median(rps for _, rps in got[ref_name])
        ref_cpu = statistics.median(cpu for cpu, _ in got[ref_name])
        procs.log(f"\n{'GET, median of ' + str(args.rounds):<30}{'req/s':>9}{'× bare':>9}"
                  f"{'CPU µs/req':>12}{'× bare':>9}")
        for name, vals in got.items():
            rps = statistics.median(v[1] for v in vals)
            cpu = statistics.median(v[0] for v in vals)
            procs.log(f"{name:<30}{rps:>9.0f}{rps / ref_rps:>8.2f}×{cpu:>12.1f}"
                      f"{cpu / ref_cpu:>8.2f}×")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
