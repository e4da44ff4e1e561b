"""Phase 3 of the benchmark suite: the resolve rate and memory as a node's store grows.

One secondary node serves a small and a large cached LMDB store (``benchmarks.stores``), R
rounds of random lookups over each whole key range; then the anonymous memory of the serving
processes and of the whole network holding the large store.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import procs, report, stores
from benchmarks.network import Network, free_preset
from benchmarks.procs import log
from benchmarks.scenarios import describe, node_processes, rotate, top_stats, wrk_resolve

CACHE = Path(__file__).resolve().parent / ".cache"

if TYPE_CHECKING:
    from benchmarks.run import Settings


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
        warm = [net.spawn(f"warm-{i}", ["recursive"], "--reuse-port")
                for i in range(node_processes()["recursive"])]
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
        recursive = [h for h in nets[large].hosts if h.label.startswith("warm")]
        # first connections and code paths (a few answers), so that the memory the pass adds
        # is its answers: their count and RssAnon before and after it
        wrk_resolve(nets[large].http("recursive"), [stores.PREFIX], 1000, 1)
        time.sleep(1.2)  # one report interval: the top-level node has the caches' sizes
        stats_before = top_stats(nets[large].http("top")).get("recursive")
        rss_before = sum(procs.rss_anon_kib(h.pid) or 0 for h in recursive)
        recursive_pass = wrk_resolve(nets[large].http("recursive"), [stores.PREFIX], large,
                                     s.seconds)
        log("    " + describe("recursive", recursive_pass))
        time.sleep(1.2)  # one report interval: the top-level node has the caches' final sizes
        recursive_stats = top_stats(nets[large].http("top")).get("recursive")
        rss_after = sum(procs.rss_anon_kib(h.pid) or 0 for h in recursive)
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
            "recursive_rss_anon_kib": {"before": rss_before, "after": rss_after},
            "recursive_stats_before": stats_before,
            "log_problems": problems}
