#!/usr/bin/env python
"""What the access log costs: ``python benchmarks/access_log.py [--seconds 4] [--rounds 3]``.

Server CPU per resolve (GET, wrk, one connection group) of one ``idsim node`` (LMDB) with the
access log off (the default), on for every request, and on for 1 % of them
(``--access-log-sample 0.01``), beside the bare aiohttp reference of
``benchmarks/cpu_per_request.py`` measured in the same interleaved rounds. Medians are
printed with their ratio to the reference and to the node with the log off; a second node
with the log off shows how far two equal nodes differ on this box. Off, the server
is built exactly as without the feature (``access_log=None``), so "off" should match the
node as it was; the ratio "on / off" is the price of writing every request.
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

from benchmarks import procs  # noqa: E402
from benchmarks.cpu_per_request import REFERENCE_SERVER, cpu_us_per_request  # noqa: E402

NODES = {"log off": [], "log off, a second node": [],  # the spread between two equal nodes
         "log on, every request": ["--access-log"],
         "log on, 1% sampled": ["--access-log", "--access-log-sample", "0.01"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4, help="seconds of wrk per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    args = p.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-accesslog-"))
    try:
        ref_port = procs.free_port()
        ref = procs.spawn([sys.executable, "-c", REFERENCE_SERVER, str(ref_port)])
        procs.wait_port(ref_port, proc=ref)
        runs = {"reference GET": (ref.pid, f"http://127.0.0.1:{ref_port}"
                                  "/api/handles/88.118.8/SN000000042", None, {})}
        for i, (name, flags) in enumerate(NODES.items()):
            port = procs.free_port()
            node = procs.spawn([sys.executable, "-m", "topology.cli", "node", "--code", "88.118",
                                "--enterprise", "88.118.8", "--demo", "10000", "--port",
                                str(port), "--data", str(tmp / f"node{i}"), *flags],
                               stdout=subprocess.DEVNULL, cwd=HERE.parent)
            procs.wait_port(port, timeout=60, proc=node)
            runs[name] = (node.pid, f"http://127.0.0.1:{port}", str(HERE / "resolve.lua"),
                          {"IDSIM_PREFIXES": "88.118.8", "IDSIM_COUNT": "10000"})
        got: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, (pid, url, script, env) in runs.items():
                got[name].append(cpu_us_per_request(pid, url, args.seconds, script, env))
            procs.log(f"round {r + 1}/{args.rounds}: " +
                      ", ".join(f"{n} {v[-1]:.0f} µs" for n, v in got.items()))
        med = {name: statistics.median(v) for name, v in got.items()}
        off = med["log off"]
        procs.log(f"\n{'server CPU per resolve (median)':<34}{'µs':>8}{'× ref':>9}{'× off':>9}")
        for name, value in med.items():
            procs.log(f"{name:<34}{value:>8.0f}{value / med['reference GET']:>8.2f}×"
                      f"{value / off:>8.2f}×")
        lines = sum(1 for f in tmp.glob("node*/logs/access-*.jsonl*")
                    for _ in f.open(encoding="utf-8"))
        procs.log(f"access lines written: {lines:,}")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
