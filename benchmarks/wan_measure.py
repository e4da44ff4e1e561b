"""Measured against modelled: cold resolves through the recursive node with ``--wan china``.

Runs the network (default ``guangzhou-2021``, every node in one host process, memory stores,
``--demo`` identifiers per enterprise) twice: with the WAN off (the reference: loopback and
the nodes' own work) and with ``--wan china``. For a few secondary nodes it resolves, through
the recursive node in Guangzhou, the first identifier of each of ``--prefixes`` enterprise
prefixes: a cold resolve (answer and delegation not cached; connections already open after a
first, discarded resolve), i.e. a delegation call to the top-level node and a resolve call to
the serving node. It prints, per node, the modelled p50/p99 of those two round trips (drawn
from the model as ``benchmarks.wan_table`` does), the measured p50/p99 with the WAN and the
measured p50 without, and the ratio measured-with / (modelled + measured-without).
``--from Guangzhou,Beijing`` measures from a recursive node in each of those cities.

    python -m benchmarks.wan_measure [--preset guangzhou-2021] [--prefixes 20] [--from CITIES]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.network import Network, free_preset
from resolver.config import Config, write_toml
from resolver.wan import WanModel
from topology import demo
from topology.wan_presets import places, wan_layer

NODES = ("88.101", "88.201", "88.271", "88.301", "88.311", "88.331")


def p(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


def measure(topo, config: Config, data: Path, nodes, prefixes: int
            ) -> dict[tuple[str, str], list[float]]:
    """Per (recursive node, secondary node): ms of each cold resolve (the first per pair,
    which opens connections, is left out)."""
    data.mkdir(parents=True)
    write_toml(config, data / "config.toml")
    net = Network(topo, data)
    recursives = [r.name for r in topo.recursives()]
    flags = ("--store", "memory", "--config", str(data / "config.toml"))
    try:
        net.start("all", ["top", *(s.code for s in topo.secondaries)], *flags)
        for name in recursives:
            net.start(name, [name], *flags)
        out = {}
        for name in recursives:
            url = topo.address_of(name).http_url
            for code in nodes:
                times = []
                for k, ent in enumerate(topo.enterprises_of(code)[:prefixes + 1]):
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(f"{url}/api/handles/{ent.prefix}/"
                                                f"{demo.suffix(0)}", timeout=30) as resp:
                        resp.read()
                    if k:
                        times.append((time.perf_counter() - t0) * 1000)
                out[name, code] = times
        return out
    finally:
        net.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="guangzhou-2021")
    ap.add_argument("--prefixes", type=int, default=20, help="cold resolves per node")
    ap.add_argument("--demo", type=int, default=1, help="identifiers per enterprise")
    ap.add_argument("--from", dest="cities", default="Guangzhou",
                    help="cities of the recursive nodes to resolve from, e.g. Guangzhou,Beijing")
    args = ap.parse_args(argv)
    topo = free_preset(args.preset, identifiers_per_enterprise=args.demo,
                       recursive_cities=tuple(args.cities.split(",")))
    nodes = [c for c in NODES if any(s.code == c for s in topo.secondaries)]
    wan = Config().with_values("--wan china", wan_layer("china"))
    with tempfile.TemporaryDirectory(prefix="idsim-wan-") as tmp:
        off = measure(topo, Config(), Path(tmp) / "off", nodes, args.prefixes)
        on = measure(topo, wan, Path(tmp) / "china", nodes, args.prefixes)
    model = WanModel(wan.wan, places(topo))
    print(f"{args.preset}: cold resolves through recursive nodes in {args.cities}, "
          f"{args.prefixes} per node, ms")
    print("| from | node | city | modelled p50 | modelled p99 | measured p50 | measured p99 "
          "| WAN off p50 | measured / (modelled + off), p50 |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in topo.recursives():
        for code in nodes:
            links = [model.link(a, b) for a, b in ((r.name, "top"), ("top", r.name),
                                                   (r.name, code), (code, r.name))]
            modelled = [links[0].draw(100).ms + links[1].draw(1000).ms + links[2].draw(100).ms
                        + links[3].draw(1000).ms for _ in range(20_000)]
            got, base = on[r.name, code], statistics.median(off[r.name, code])
            m50 = statistics.median(modelled)
            print(f"| {model.place(r.name).city} | {code} | {model.place(code).city} "
                  f"| {m50:.1f} | {p(modelled, 0.99):.1f} | {statistics.median(got):.1f} "
                  f"| {p(got, 0.99):.1f} | {base:.1f} | {statistics.median(got) / (m50 + base):.2f} |")


if __name__ == "__main__":
    main()
