"""The WAN model's delays for ``guangzhou-2021 --wan china``, from the pure model (no network).

For a recursive node in Guangzhou (where the preset puts it) and one in Beijing, to a few
secondary nodes: the fixed base of the link, the one-way delay's median and p99 (request of
``--request`` bytes), and the modelled RPC time of a cold resolve on open connections (the
delegation round trip to the top-level node in Guangzhou, then the resolve round trip to the
serving node, answer of ``--answer`` bytes). Draws are seeded: the same run prints the same
table.

    python -m benchmarks.wan_table [--draws 100000] [--seed 1]
"""
from __future__ import annotations

import argparse
import statistics

from resolver.config import Config
from resolver.wan import WanModel
from topology.presets import get_preset
from topology.wan_presets import place_of, places, wan_layer

NODES = ("88.101", "88.201", "88.271", "88.301", "88.311", "88.321", "88.331")
FROM = {"Guangzhou": "recursive", "Beijing": "recursive-beijing"}


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=100_000, help="delays drawn per link")
    p.add_argument("--seed", type=int, default=1, help="[wan] seed")
    p.add_argument("--request", type=int, default=100, help="bytes of a request")
    p.add_argument("--answer", type=int, default=1000, help="bytes of an answer")
    args = p.parse_args(argv)
    config = Config().with_values("--wan china", wan_layer("china")).with_values(
        "--seed", {"wan": {"seed": args.seed}}).wan
    topo = get_preset("guangzhou-2021")
    where = places(topo) | {"recursive-beijing": place_of("Beijing")}
    model = WanModel(config, where)
    print(f"guangzhou-2021 --wan china: {args.draws:,} draws per link, seed {args.seed}; "
          f"route factor {config.route_factor:g}, jitter median {config.jitter_median_ms:g} "
          f"ms / p99 {config.jitter_p99_ms:g} ms, loss {config.loss:g}, "
          f"{config.bandwidth_mbps:g} Mbit/s; top-level node in {where['top'].city}")
    print("| from | to | city | base ms | one-way p50 ms | one-way p99 ms "
          "| cold resolve p50 ms | cold resolve p99 ms |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    n = args.draws
    for city, rec in FROM.items():
        to_top, from_top = model.link(rec, "top"), model.link("top", rec)
        delegation = [to_top.draw(args.request).ms + from_top.draw(args.answer).ms
                      for _ in range(n)]
        for code in NODES:
            out, back = model.link(rec, code), model.link(code, rec)
            one_way = [out.draw(args.request).ms for _ in range(n)]
            cold = [d + out.draw(args.request).ms + back.draw(args.answer).ms
                    for d in delegation]
            print(f"| {city} | {code} | {where[code].city} | {out.base_ms:.1f} "
                  f"| {statistics.median(one_way):.1f} | {pct(one_way, 0.99):.1f} "
                  f"| {statistics.median(cold):.1f} | {pct(cold, 0.99):.1f} |")


if __name__ == "__main__":
    main()
