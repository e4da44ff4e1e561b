#!/usr/bin/env python
"""What HTTPS costs a resolve: ``python benchmarks/tls_cost.py [--seconds 4] [--rounds 3]``.

Two ``mini`` networks run side by side, one plain and one as ``idsim up --tls`` serves it
(certificates from a cluster CA, ``topology.pki``), each as two host processes (the top-level
and secondary nodes; the recursive node alone). wrk resolves the demo identifiers through each
recursive node (warm answer cache), and the recursive node's CPU per request (user + system,
as ``cpu_per_request.py`` counts it) is compared: plain HTTP is the reference measured in
the same rounds. Twice: with keep-alive connections (the TLS handshake spread over a whole run)
and with ``Connection: close`` (one handshake per request, the worst case). Rounds interleave;
medians, req/s and the TLS/plain ratios are printed. wrk does not verify certificates.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path


HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs, wrk  # noqa: E402
from benchmarks.cpu_per_request import measure  # noqa: E402
from benchmarks.network import Network, free_preset  # noqa: E402
from resolver.roles import Role  # noqa: E402
from topology import pki  # noqa: E402

CLOSE_LUA = """-- resolve.lua, each request on a new connection (a TLS handshake each)
dofile(os.getenv("IDSIM_RESOLVE_LUA"))
wrk.headers["Connection"] = "close"
"""


def start(data: Path, tls: bool, avoid: set[int]) -> Network:
    """A ``mini`` network (ports clear of ``avoid``), HTTPS when ``tls``; ready to resolve."""
    while True:
        topo = free_preset("mini")
        ports = {p for _, _, p in topo.endpoints()}
        if not ports & avoid:
            break
    if tls:
        topo = topo.with_scheme("https")
        pki.ensure(pki.directory(data), {a.host for a in topo.addresses()},
                   dt.datetime.now(dt.timezone.utc))
    net = Network(topo, data)
    net.start("host-0", [Role.TOP.value, *(s.code for s in topo.secondaries)])
    net.start("host-1", [Role.RECURSIVE.value])
    return net


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if wrk.binary() is None:
        procs.log("wrk is not installed (apt-get install wrk)")
        return 2
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-tls-"))
    (tmp / "close.lua").write_text(CLOSE_LUA)
    nets: dict[str, Network] = {}
    try:
        nets["plain"] = start(tmp / "plain", False, set())
        nets["tls"] = start(tmp / "tls", True,
                            {p for _, _, p in nets["plain"].topo.endpoints()})
        env = {"IDSIM_PREFIXES": ",".join(nets["plain"].prefixes()),
               "IDSIM_COUNT": str(nets["plain"].topo.identifiers_per_enterprise),
               "IDSIM_RESOLVE_LUA": str(HERE / "resolve.lua")}
        runs = {}  # name -> (pid, url, script)
        for kind, net in nets.items():
            pid = net.hosts[1].pid
            url = net.http(Role.RECURSIVE)
            runs[f"{kind} keep-alive"] = (pid, url, str(HERE / "resolve.lua"))
            runs[f"{kind} new connection"] = (pid, url, str(tmp / "close.lua"))
        for name, (pid, url, script) in runs.items():  # warm the answer caches
            wrk.run(url, 1, script=script, env=env, threads=1, connections=8)
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        rps: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, (pid, url, script) in runs.items():
                us, rate = measure(pid, url, args.seconds, script, env)
                cpu[name].append(us)
                rps[name].append(rate)
            procs.log(f"round {r + 1}/{args.rounds}: "
                      + ", ".join(f"{n} {v[-1]:.0f} µs" for n, v in cpu.items()))
        med = {n: statistics.median(v) for n, v in cpu.items()}
        med_rps = {n: statistics.median(v) for n, v in rps.items()}
        procs.log(f"\n{'recursive node, warm resolve (median)':<40}{'µs CPU':>8}{'req/s':>9}"
                  f"{'CPU ratio':>11}")
        for name in runs:
            ref = name.replace("tls", "plain")
            procs.log(f"{name:<40}{med[name]:>8.0f}{med_rps[name]:>9.0f}"
                      f"{med[name] / med[ref]:>10.2f}×")
    finally:
        for net in nets.values():
            net.stop()
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
