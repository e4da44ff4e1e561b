#!/usr/bin/env python
"""idsim benchmark suite: ``python benchmarks/run.py [--quick]``.

Numbers from a small, shared, noisy machine are only worth something relative to a reference
measured at the same moment, so every figure comes with a ratio to a reference measured in the
same round (nginx returning a fixed answer is the ceiling), the scenarios run in R interleaved
rounds, and the median over rounds is reported.

Phases:
1. tools: wrk and nginx (apt-get installs them if missing);
2. resolve & register: nginx, the bare aiohttp reference (``cpu_per_request.REFERENCE_SERVER``)
   and an idsim ``mini`` network: the measured secondary node in its own processes, the top
   and the other secondaries in one more, a warm recursive node, the same with
   ``metrics.enabled=0`` and a cold one with its answer cache off, each node in as many
   processes as a user gets by default (``cluster.default_processes()``, SO_REUSEPORT);
   R rounds of nginx / aiohttp / warm / warm without metrics / cold / secondary resolves (each
   with the CPU per request of its serving processes), durable single registrations at one
   node and at two nodes at once, batch registrations and the same warm resolve load through
   Locust;
3. store size: one secondary node serving a small and a large cached LMDB store, R rounds of
   random lookups over each whole key range, anonymous memory of the serving processes and of
   the whole network holding the large store;
4. targets, ``results/latest.json``, plots and ``README.md``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path[0] = str(ROOT)  # import as the package ``benchmarks``, not loose modules
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import nginx, procs, readme_sections, report, targets, tools  # noqa: E402
from benchmarks.report_readme import readme  # noqa: E402
from benchmarks.network import Network, free_preset  # noqa: E402
from benchmarks.scenarios import (basic_token, describe, locust_resolve, node_processes,  # noqa: E402
                                  rotate, start_reference, top_stats, with_cpu, wrk_plain,
                                  wrk_register, wrk_register_spread, wrk_resolve)
from benchmarks.store_phase import store_phase  # noqa: E402
from benchmarks.procs import log  # noqa: E402

RESULTS = HERE / "results"
GiB_KiB = 2**20
RESOLVES = targets.RESOLVES
SECONDARY = "88.118"            # the node measured directly, and whose enterprise registers
ENTERPRISE = "88.118.8"
OTHER_NODE = "88.201"           # served by a second process: registrations use both


@dataclass(frozen=True)
class Settings:
    quick: bool
    seconds: int            # each wrk / batch / Locust run
    rounds: int
    per_enterprise: int     # demo identifiers per enterprise in the resolve network
    store_sizes: tuple[int, int]
    locust_users: int = 300
    batch_size: int = 1000
    batch_concurrency: int = 4


QUICK = Settings(True, seconds=3, rounds=1, per_enterprise=200, store_sizes=(100_000, 1_000_000))
FULL = Settings(False, seconds=10, rounds=3, per_enterprise=1000,
                store_sizes=(1_000_000, 10_000_000))


# ================================================================== scenarios



def batch_register(url: str, login: dict, s: Settings) -> dict:
    """Batch registrations as msgpack batches (``benchmarks.batch_register.load``, the client
    ``python benchmarks/batch_register.py`` measures with)."""
    from benchmarks.batch_register import load
    return asyncio.run(load(url, basic_token(login), login["prefix"], s.seconds, s.batch_size,
                            s.batch_concurrency))


# ================================================================== phase 2: resolve network

def start_resolve_network(s: Settings, tmp: Path) -> tuple[Network, dict, dict]:
    """The mini network, its URLs and the pids serving each measured scenario."""
    topo = free_preset("mini", identifiers_per_enterprise=s.per_enterprise)
    net = Network(topo, tmp / "resolve-net")
    codes = [n.code for n in topo.secondaries]
    n = node_processes()
    log(f"  idsim mini network on ports {topo.recursive.http_port}..; seeding "
        f"{s.per_enterprise:,} identifiers × {len(topo.enterprises)} enterprises; "
        f"{n['recursive']} processes per recursive node, {n['secondary']} for node {SECONDARY}")
    t0 = time.monotonic()
    net.start("core", ["top", *(c for c in codes if c != SECONDARY)])
    shared = ("--reuse-port",) if n["secondary"] > 1 else ()
    secondary = [net.start(f"secondary-{i}", [SECONDARY], *shared) for i in range(n["secondary"])]

    def recursive(label: str, *flags: str) -> tuple[list, str]:
        port = procs.free_port()
        hosts = [net.spawn(f"{label}-{i}", ["recursive"], "--reuse-port", "--recursive-port",
                           str(port), *flags) for i in range(n["recursive"])]
        return hosts, f"http://127.0.0.1:{port}"
    # every recursive node gets the same processes: the ratios compare like with like
    warm = [net.spawn(f"warm-{i}", ["recursive"], "--reuse-port") for i in range(n["recursive"])]
    nometrics, nometrics_url = recursive("nometrics", "--set", "metrics.enabled=0")
    cold, cold_url = recursive("cold", "--set", "cache.answer_entries=0")
    net.wait_ready(*warm, *nometrics, *cold)
    net.write_state()
    log(f"  network ready in {time.monotonic() - t0:.1f} s")
    urls = {"warm": topo.recursive.http_url, "warm_nometrics": nometrics_url, "cold": cold_url,
            "secondary": net.http(SECONDARY), "other": net.http(OTHER_NODE),
            "top": topo.top.http_url}
    pids = {"warm": [h.pid for h in warm], "warm_nometrics": [h.pid for h in nometrics],
            "cold": [h.pid for h in cold], "secondary": [h.pid for h in secondary]}
    return net, urls, pids


def resolve_phase(s: Settings, tmp: Path, nginx_bin: str) -> dict:
    port = procs.free_port()
    ng = nginx.start(nginx_bin, tmp / "nginx", port)
    ref, ref_url = start_reference()
    log(f"  nginx on 127.0.0.1:{port} (pid {ng.pid}), bare aiohttp at {ref_url} (pid {ref.pid})")
    net = None
    try:
        net, urls, pids = start_resolve_network(s, tmp)
        urls.update(nginx=f"http://127.0.0.1:{port}", aiohttp=ref_url)
        pids.update(nginx=[ng.pid], aiohttp=[ref.pid])
        all_prefixes = net.prefixes()
        login = net.logins["enterprises"][ENTERPRISE]
        other_login = net.logins["enterprises"][net.prefixes(OTHER_NODE)[0]]

        def resolve(name: str, prefixes: list[str]):
            return lambda: wrk_resolve(urls[name], prefixes, s.per_enterprise, s.seconds)
        runs = {name: resolve(name, all_prefixes)
                for name in ("aiohttp", "warm", "warm_nometrics", "cold")}
        runs["nginx"] = lambda: wrk_plain(urls["nginx"], s.seconds)
        runs["secondary"] = resolve("secondary", net.prefixes(SECONDARY))
        log(f"  warming: one wrk pass through each warm recursive node ({s.seconds} s), "
            f"a short one through the cold one")
        warmup = {name: runs[name]() for name in ("warm", "warm_nometrics")}
        warmup["cold"] = wrk_resolve(urls["cold"], all_prefixes, s.per_enterprise, 1)
        stats_before = top_stats(urls["top"])
        rounds = []
        for r in range(s.rounds):
            log(f"  round {r + 1}/{s.rounds}")
            rnd: dict = {"order": rotate(RESOLVES, r)}
            for name in rnd["order"]:
                rnd[name] = with_cpu(pids[name], runs[name])
            for name in RESOLVES:
                log("    " + describe(name, rnd[name], rnd["aiohttp"]["rps"], "aiohttp")
                    + f"  CPU {rnd[name]['cpu_us']:.1f} µs/request")
            rnd["register_one"] = wrk_register(urls["secondary"], login, s.seconds)
            log("    " + describe("reg 1 node", rnd["register_one"], rnd["warm"]["rps"], "warm")
                + f"  (201: {rnd['register_one']['created']:,}, "
                  f"other: {rnd['register_one']['other']})")
            rnd["register"] = wrk_register_spread([(urls["secondary"], login),
                                                   (urls["other"], other_login)], s.seconds)
            log("    " + describe("reg 2 nodes", rnd["register"], rnd["warm"]["rps"], "warm")
                + f"  (201: {rnd['register']['created']:,}, other: {rnd['register']['other']})")
            rnd["batch"] = batch_register(urls["secondary"], login, s)
            log("    " + describe("batch", rnd["batch"], rnd["register"]["rate"], "single")
                + f"  ({rnd['batch']['batches']} batches of {s.batch_size}, "
                  f"failed {rnd['batch']['failed']}, HTTP errors {rnd['batch']['http_errors']})")
            rnd["locust"] = locust_resolve(urls["warm"], net.data, s)
            log("    " + describe("locust", rnd["locust"], rnd["warm"]["rps"], "wrk warm")
                + f"  (Locust CPU {rnd['locust']['cpu']:.0%} of a core)")
            rounds.append(rnd)
        time.sleep(1.2)  # one report interval, so the top-level node has the final counters
        stats_after = top_stats(urls["top"])
        memory = net.rss_anon_kib()
        host_pids = {h.label: h.pid for h in net.hosts}
    finally:
        if net is not None:
            net.stop()
        procs.stop(ref)
        procs.stop(ng)
    return {"urls": urls, "warmup": warmup, "rounds": rounds,
            "summary": targets.summarise(rounds), "processes": node_processes(),
            "rss_anon_kib": memory, "pids": host_pids,
            "recursive_cache": cache_share(stats_before, stats_after),
            "log_problems": net.log_problems() if net else {}}


def cache_share(before: dict, after: dict) -> dict:
    """Answer-cache hits of the warm recursive processes over the measured rounds (wrk and
    Locust), from the counters they report to the top-level node."""
    def totals(doc: dict) -> tuple[int, int]:
        rows = [v for v in doc.get("recursive", {}).values() if v.get("cacheHits") is not None]
        warm = [v for v in rows if v.get("cacheHits")]  # the cold process never hits
        return (sum(v.get("cacheHits", 0) for v in warm), sum(v.get("resolutions", 0) for v in warm))
    h0, n0 = totals(before)
    h1, n1 = totals(after)
    return {"hits": h1 - h0, "resolutions": n1 - n0,
            "hit_share": (h1 - h0) / (n1 - n0) if n1 > n0 else None, "after": after.get("recursive")}


# ================================================================== phase 4: verdicts and output

def evaluate(res: dict) -> list[report.Check]:
    return targets.evaluate(res["resolve"]["summary"], res["store_size"], res.get("cache_memory"))


def unexpected_answers(res: dict) -> int:
    summ = res["resolve"]["summary"]
    n = sum(summ[k]["non2xx"] + summ[k]["socket_errors"]
            for k in [*RESOLVES, "register", "register_one"] if k in summ)
    n += summ["batch"]["failed"] + summ["locust"]["failures"]
    n += sum(v["non2xx"] for v in res["store_size"]["summary"].values())
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="3 s runs, 1 round, small stores: under 2 minutes")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: rewrite README.md and the plots from results/latest.json")
    p.add_argument("--out", type=Path, default=None,
                   help="write latest.json, the plots and README.md here instead of benchmarks/")
    args = p.parse_args(argv)
    out = Outputs(args.out / "results", args.out / "README.md") if args.out else Outputs()
    if args.report_only:
        res = json.loads((out.results / "latest.json").read_text())
        finish(res, out)
        return 0
    s = QUICK if args.quick else FULL
    procs.install_handlers()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-bench-"))
    res: dict = {"mode": "quick" if s.quick else "full", "settings": asdict(s)}
    try:
        log("== tools")
        wrk_bin = tools.ensure("wrk", ["wrk"])
        nginx_bin = tools.ensure("nginx", ["nginx-light", "nginx"])
        res["machine"] = report.machine(tools.version(wrk_bin), tools.version(nginx_bin), ROOT)
        log(f"== resolve and register ({s.rounds} round(s) of {s.seconds} s runs)")
        res["resolve"] = resolve_phase(s, tmp, nginx_bin)
        log("== resolve rate vs store size")
        res["store_size"] = store_phase(s, tmp)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    except SystemExit:
        log("terminated: stopping everything")
        raise
    finally:
        procs.stop_all()
        if args.keep:
            log(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["duration_s"] = round(time.monotonic() - started, 1)
    finish(res, out)
    log(f"done in {res['duration_s']:.0f} s: {out.results / 'latest.json'}, {out.readme}")
    return 0


@dataclass(frozen=True)
class Outputs:
    results: Path = RESULTS
    readme: Path = HERE / "README.md"


def finish(res: dict, out: Outputs) -> None:
    """Derived figures, target verdicts, then every output file."""
    res["cache_memory"] = report.cache_memory(res["store_size"])
    checks = evaluate(res)
    res["targets"] = [c.as_dict() for c in checks]
    res["unexpected_answers"] = unexpected_answers(res)
    write_outputs(res, checks, out)
    log(f"\n{report.results_table(res, checks)}\n")


def write_outputs(res: dict, checks: list[report.Check], out: Outputs) -> None:
    out.results.mkdir(parents=True, exist_ok=True)
    tmp = out.results / "latest.json.tmp"
    tmp.write_text(json.dumps(res, indent=2, default=str))
    tmp.replace(out.results / "latest.json")
    report.plot_resolve(res["resolve"]["summary"], res["resolve"]["rounds"],
                        out.results / "resolve.png")
    report.plot_store(res["store_size"], out.results / "store_size.png")
    out.readme.write_text(readme_sections.keep(readme(res, checks), out.readme))


if __name__ == "__main__":
    sys.exit(main())
