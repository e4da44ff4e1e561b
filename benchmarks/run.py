#!/usr/bin/env python
"""idsim benchmark suite: ``python benchmarks/run.py [--quick]``.

Numbers from a small, shared, noisy machine are only worth something relative to a reference
measured at the same moment, so every figure comes with a ratio to a reference measured in the
same round (nginx returning a fixed answer is the ceiling), the scenarios run in R interleaved
rounds, and the median over rounds is reported.

Phases:
1. tools: wrk and nginx (apt-get installs them if missing);
2. resolve & register: nginx + an idsim ``mini`` network (top and secondaries in one process,
   a warm recursive node in two processes on one port, a cold one (also two) with its answer
   cache off; the secondary nodes in two processes),
   R rounds of nginx / warm / cold / secondary resolves, durable single registrations at one
   node and at two nodes in two processes at once (all cores, like the warm figure), batch
   registrations and the same warm resolve load through Locust;
3. store size: one secondary node serving a small and a large cached LMDB store, R rounds of
   random lookups over each whole key range, anonymous memory of the serving processes and of
   the whole network holding the large store;
4. targets, ``results/latest.json``, plots and ``README.md``.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path[0] = str(ROOT)  # import as the package ``benchmarks``, not loose modules
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import nginx, procs, readme_sections, report, stores, tools, wrk  # noqa: E402
from benchmarks.network import Network, free_preset  # noqa: E402
from benchmarks.procs import log  # noqa: E402
from resolver import auth  # noqa: E402

RESOLVE_LUA = str(HERE / "resolve.lua")
REGISTER_LUA = str(HERE / "register.lua")
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
GiB_KiB = 2**20
RESOLVES = ["nginx", "warm", "cold", "secondary"]
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


def rotate(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


# ================================================================== scenarios

def wrk_resolve(url: str, prefixes: list[str], count: int, seconds: float) -> dict:
    res = wrk.run(url, seconds, script=RESOLVE_LUA,
                  env={"IDSIM_PREFIXES": ",".join(prefixes), "IDSIM_COUNT": str(count)})
    return res.as_dict()


def wrk_plain(url: str, seconds: float) -> dict:
    return wrk.run(url, seconds).as_dict()


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


def batch_register(url: str, login: dict, s: Settings) -> dict:
    """Batch registrations as msgpack batches (``benchmarks.batch_register.load``, the client
    ``python benchmarks/batch_register.py`` measures with)."""
    from benchmarks.batch_register import load
    return asyncio.run(load(url, basic_token(login), login["prefix"], s.seconds, s.batch_size,
                            s.batch_concurrency))


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
    parts = [f"{name:<10} {rate:>10,.0f}/s"]
    if r.get("p50_ms") is not None:
        parts.append(f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
    if "non2xx" in r:
        parts.append(f"non-2xx {r['non2xx']}")
    if ref:
        parts.append(f"({rate / ref:.2f}× {ref_name})")
    return "  ".join(parts)


# ================================================================== phase 2: resolve network

def start_resolve_network(s: Settings, tmp: Path) -> tuple[Network, dict]:
    topo = free_preset("mini", identifiers_per_enterprise=s.per_enterprise)
    net = Network(topo, tmp / "resolve-net")
    codes = [n.code for n in topo.secondaries]
    log(f"  idsim mini network on ports {topo.recursive.http_port}..; seeding "
        f"{s.per_enterprise:,} identifiers × {len(topo.enterprises)} enterprises")
    t0 = time.monotonic()
    # the secondary nodes in two processes, as registrations at more than one node use them
    net.start("core", ["top", SECONDARY])
    net.start("core-2", [c for c in codes if c != SECONDARY])
    cold_port = procs.free_port()
    warm = [net.spawn(f"warm-{i}", ["recursive"], "--reuse-port") for i in range(2)]
    # the cold node gets the same two processes as the warm one: the ratio compares like
    # with like (all cores used), and differs only by the answer cache
    cold = [net.spawn(f"cold-{i}", ["recursive"], "--set", "cache.answer_entries=0", "--reuse-port",
                      "--recursive-port", str(cold_port)) for i in range(2)]
    net.wait_ready(*warm, *cold)
    net.write_state()
    log(f"  network ready in {time.monotonic() - t0:.1f} s")
    urls = {"warm": topo.recursive.http_url, "cold": f"http://127.0.0.1:{cold_port}",
            "secondary": net.http(SECONDARY), "other": net.http(OTHER_NODE),
            "top": topo.top.http_url}
    return net, urls


def resolve_phase(s: Settings, tmp: Path, nginx_bin: str) -> dict:
    port = procs.free_port()
    ng = nginx.start(nginx_bin, tmp / "nginx", port)
    log(f"  nginx on 127.0.0.1:{port} (pid {ng.pid})")
    net = None
    try:
        net, urls = start_resolve_network(s, tmp)
        urls["nginx"] = f"http://127.0.0.1:{port}"
        all_prefixes = net.prefixes()
        login = net.logins["enterprises"][ENTERPRISE]
        other_login = net.logins["enterprises"][net.prefixes(OTHER_NODE)[0]]
        runs = {
            "nginx": lambda: wrk_plain(urls["nginx"], s.seconds),
            "warm": lambda: wrk_resolve(urls["warm"], all_prefixes, s.per_enterprise, s.seconds),
            "cold": lambda: wrk_resolve(urls["cold"], all_prefixes, s.per_enterprise, s.seconds),
            "secondary": lambda: wrk_resolve(urls["secondary"], net.prefixes(SECONDARY),
                                             s.per_enterprise, s.seconds),
        }
        log(f"  warming: one wrk pass through the warm recursive node ({s.seconds} s), "
            f"a short one through the cold one")
        warmup = {"warm": runs["warm"](),
                  "cold": wrk_resolve(urls["cold"], all_prefixes, s.per_enterprise, 1)}
        stats_before = top_stats(urls["top"])
        rounds = []
        for r in range(s.rounds):
            log(f"  round {r + 1}/{s.rounds}")
            rnd: dict = {"order": rotate(RESOLVES, r)}
            for name in rnd["order"]:
                rnd[name] = runs[name]()
            for name in RESOLVES:
                log("    " + describe(name, rnd[name], rnd["nginx"]["rps"]))
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
        pids = {h.label: h.pid for h in net.hosts}
    finally:
        if net is not None:
            net.stop()
        procs.stop(ng)
    return {"urls": urls, "warmup": warmup, "rounds": rounds, "summary": summarise(rounds),
            "rss_anon_kib": memory, "pids": pids,
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


def summarise(rounds: list[dict]) -> dict:
    med = report.median

    def per_round(name: str, key: str, ref: str | None = None, ref_key: str = "rps"):
        vals = []
        for r in rounds:
            v = r[name].get(key)
            vals.append(report.ratio(v, r[ref].get(ref_key)) if ref else v)
        return med(vals)

    out = {}
    for name in RESOLVES:
        out[name] = {"rps": per_round(name, "rps"), "p50_ms": per_round(name, "p50_ms"),
                     "p99_ms": per_round(name, "p99_ms"),
                     "non2xx": sum(r[name]["non2xx"] for r in rounds),
                     "socket_errors": sum(sum(r[name]["socket_errors"].values()) for r in rounds),
                     "ratio_to_nginx": per_round(name, "rps", "nginx")}
    out["cold"]["ratio_to_warm"] = per_round("cold", "rps", "warm")
    out["register"] = {"rate": per_round("register", "rate"), "rps": per_round("register", "rate"),
                       "p50_ms": per_round("register", "p50_ms"),
                       "p99_ms": per_round("register", "p99_ms"),
                       "non2xx": sum(r["register"]["other"] for r in rounds),
                       "socket_errors": sum(sum(r["register"]["socket_errors"].values())
                                            for r in rounds),
                       "ratio_to_warm": per_round("register", "rate", "warm"),
                       "ratio_to_nginx": per_round("register", "rate", "nginx")}
    out["register_one"] = {"rate": per_round("register_one", "rate"),
                           "rps": per_round("register_one", "rate"),
                           "p50_ms": per_round("register_one", "p50_ms"),
                           "p99_ms": per_round("register_one", "p99_ms"),
                           "non2xx": sum(r["register_one"]["other"] for r in rounds),
                           "socket_errors": sum(sum(r["register_one"]["socket_errors"].values())
                                                for r in rounds),
                           "ratio_to_warm": per_round("register_one", "rate", "warm")}
    out["batch"] = {"rate": per_round("batch", "rate"),
                    "failed": sum(r["batch"]["failed"] + r["batch"]["http_errors"] for r in rounds),
                    "batch_p50_ms": per_round("batch", "batch_p50_ms"),
                    "ratio_to_register": per_round("batch", "rate", "register_one", "rate")}
    out["locust"] = {"rps": per_round("locust", "rps"), "cpu": per_round("locust", "cpu"),
                     "failures": sum(r["locust"]["failures"] for r in rounds),
                     "p50_ms": per_round("locust", "p50_ms"), "p99_ms": per_round("locust", "p99_ms"),
                     "ratio_to_warm": per_round("locust", "rps", "warm")}
    return out


# ================================================================== phase 3: store size

def start_store_network(size: int, build: dict, tmp: Path, with_recursive: bool) -> Network:
    """A mini network whose node 88.118 serves the cached store (symlinked into the data dir);
    the logins it bootstrapped with are kept beside the store."""
    cdir = Path(build["dir"])
    saved = cdir / "logins.json"
    old = json.loads(saved.read_text()) if saved.exists() else None
    topo = free_preset("mini", identifiers_per_enterprise=10)
    data = tmp / f"store-{size}"
    data.mkdir(parents=True)
    (data / stores.NODE).symlink_to(cdir / stores.NODE)
    net = Network(topo, data, logins=old)
    shutil.copyfile(data / "logins.json", saved)
    saved.chmod(0o600)
    others = [n.code for n in topo.secondaries if n.code != stores.NODE]
    net.start("core", ["top", *others])
    net.start("node", [stores.NODE])
    if with_recursive:
        warm = [net.spawn(f"warm-{i}", ["recursive"], "--reuse-port") for i in range(2)]
        net.wait_ready(*warm)
    return net


def store_phase(s: Settings, tmp: Path) -> dict:
    sizes = list(s.store_sizes)
    small, large = sizes
    log(f"  stores of {small:,} and {large:,} identifiers (cache: {CACHE})")
    builds = {size: stores.ensure(CACHE, size) for size in sizes}
    nets: dict[int, Network] = {}
    try:
        for size in sizes:
            t0 = time.monotonic()
            nets[size] = start_store_network(size, builds[size], tmp, with_recursive=size == large)
            secs = stores.preload(Path(builds[size]["dir"]) / stores.NODE)
            log(f"  node serving {size:,} ready in {time.monotonic() - t0:.1f} s "
                f"(store read into the page cache in {secs:.1f} s)")

        def lookups(size: int, seconds: float) -> dict:
            return wrk_resolve(nets[size].http(stores.NODE), [stores.PREFIX], size, seconds)

        for size in sizes:
            lookups(size, 1)  # first requests: connections, code paths
        rounds = []
        for r in range(s.rounds):
            rnd = {"order": rotate(sizes, r)}
            for size in rnd["order"]:
                rnd[str(size)] = lookups(size, s.seconds)
            rnd["ratio"] = report.ratio(rnd[str(large)]["rps"], rnd[str(small)]["rps"])
            log(f"  round {r + 1}/{s.rounds}: " + "; ".join(
                describe(f"{size:,}", rnd[str(size)]) for size in sizes)
                + f"  → {rnd['ratio']:.2f}× ")
            rounds.append(rnd)
        node_rss = {str(size): nets[size].rss_anon_kib()["node"] for size in sizes}
        log(f"  recursive pass over the {large:,} store ({s.seconds} s) before measuring "
            f"the whole network's memory")
        recursive_pass = wrk_resolve(nets[large].http("recursive"), [stores.PREFIX], large,
                                     s.seconds)
        log("    " + describe("recursive", recursive_pass))
        time.sleep(1.2)  # one report interval: the top-level node has the caches' final sizes
        recursive_stats = top_stats(nets[large].http("top")).get("recursive")
        cluster = nets[large].rss_anon_kib()
        cluster_pids = {h.label: h.pid for h in nets[large].hosts}
    finally:
        for net in nets.values():
            net.stop()
        problems = {str(size): net.log_problems() for size, net in nets.items()}
    summary = {str(size): {"rps": report.median(r[str(size)]["rps"] for r in rounds),
                           "p50_ms": report.median(r[str(size)]["p50_ms"] for r in rounds),
                           "p99_ms": report.median(r[str(size)]["p99_ms"] for r in rounds),
                           "non2xx": sum(r[str(size)]["non2xx"] for r in rounds)}
               for size in sizes}
    total = sum(v for v in cluster.values() if v)
    return {"sizes": sizes, "builds": {str(k): v for k, v in builds.items()}, "rounds": rounds,
            "summary": summary, "ratio": report.median(r["ratio"] for r in rounds),
            "rss_anon_kib": node_rss, "cluster_rss_anon_kib": cluster,
            "cluster_rss_anon_total_kib": total, "cluster_pids": cluster_pids,
            "recursive_pass": recursive_pass, "recursive_stats": recursive_stats,
            "log_problems": problems}


# ================================================================== phase 4: verdicts and output

def evaluate(res: dict) -> list[report.Check]:
    summ = res["resolve"]["summary"]
    store = res["store_size"]
    T = report.TARGETS
    return [
        report.check(T["warm"], summ["warm"]["ratio_to_nginx"]),
        report.check(T["cold"], summ["cold"]["ratio_to_warm"]),
        report.check(T["register"], summ["register"]["ratio_to_warm"]),
        report.check(T["batch"], summ["batch"]["rate"]),
        report.check(T["store"], store["ratio"]),
        report.check(T["memory"], store["cluster_rss_anon_total_kib"] / GiB_KiB),
    ]


def unexpected_answers(res: dict) -> int:
    summ = res["resolve"]["summary"]
    n = sum(summ[k]["non2xx"] + summ[k]["socket_errors"]
            for k in [*RESOLVES, "register", "register_one"])
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
    res["cache_memory"] = report.cache_memory(res["resolve"])
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
    out.readme.write_text(readme_sections.keep(report.readme(res, checks), out.readme))


if __name__ == "__main__":
    sys.exit(main())
