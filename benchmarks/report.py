"""Summaries, target checks, the README table, plots and the machine description.

The targets and verdicts are ``benchmarks.targets`` (pure; re-exported here); the README's
prose is ``benchmarks.report_readme``.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from benchmarks.targets import TARGETS, Check, Target, check, median, ratio  # noqa: F401

GiB = 2**30


# ------------------------------------------------------------------ pure parts

def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "GiB":
        return f"{value:.2f} GiB"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "µs":
        return f"{value:.1f} µs"
    return f"{value:,.0f} {unit}".rstrip()


def fmt_target(t: Target) -> str:
    op = "≥" if t.kind == "min" else "≤"
    limit = f"{t.limit:g}×" if t.unit == "×" else fmt_value(t.limit, t.unit)
    return f"{op} {limit}" + (f" {t.reference}" if t.unit == "×" and t.reference else "")


def cache_memory(store: dict, default_entries: int = 1_000_000) -> dict | None:
    """What one cached answer costs the recursive processes in anonymous memory: their RssAnon
    after the recursive pass over the large store minus before it (the same processes, after
    a short first pass), over the answers the pass added; beside it, what the caches
    count per entry (``cacheBytes / cacheEntries``, as reported to the top-level node). The
    answers are plain demo records (``benchmarks.stores``)."""
    rss = store.get("recursive_rss_anon_kib") or {}
    rows = [r for r in (store.get("recursive_stats") or {}).values() if r.get("cacheEntries")]
    entries = sum(r["cacheEntries"] for r in rows)
    before = sum(r.get("cacheEntries", 0)
                 for r in (store.get("recursive_stats_before") or {}).values())
    if not rss.get("after") or entries <= before:
        return None
    per_entry = (rss["after"] - rss["before"]) * 1024 / (entries - before)
    counted = sum(r.get("cacheBytes", 0) for r in rows) / entries
    return {"entries": entries, "processes": len(rows), "per_entry_bytes": per_entry,
            "counted_per_entry_bytes": counted,
            "undercount": per_entry / counted if counted else None,
            "default_entries": default_entries,
            "projected_gib_per_process": per_entry * default_entries / GiB}


# ------------------------------------------------------------------ machine

def machine(wrk_version: str, nginx_version: str, root: Path) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    packages = {}
    for name in ("aiohttp", "uvloop", "msgpack", "orjson", "lmdb", "locust", "matplotlib",
                 "psutil", "idsim"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except OSError:
            return None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "memory_gib": round(mem / GiB, 1) if mem else None,
            "kernel": platform.release(), "os": platform.platform(),
            "python": sys.version.split()[0], "packages": packages,
            "wrk": wrk_version, "nginx": nginx_version,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "git_diff_sha1": _diff_hash(root),
            "loadavg_start": os.getloadavg()}


def _diff_hash(root: Path) -> str | None:
    """A short hash of the uncommitted changes to tracked files (which tree was measured)."""
    import hashlib
    try:
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=root, capture_output=True,
                              timeout=30).stdout
    except OSError:
        return None
    return hashlib.sha1(diff).hexdigest()[:12] if diff else None


# ------------------------------------------------------------------ README

def table(rows: list[dict]) -> str:
    head = "| figure | value | reference | ratio | target | result |\n| --- | ---: | --- | ---: | --- | --- |"
    lines = [head]
    for r in rows:
        lines.append(f"| {r['figure']} | {r['value']} | {r.get('reference', '')} | "
                     f"{r.get('ratio', '')} | {r.get('target', '')} | {r.get('result', '')} |")
    return "\n".join(lines)


def detail_table(summary: dict) -> str:
    """Each resolve scenario: rate, latency and CPU per request, set against bare aiohttp."""
    head = ("| scenario | processes | req/s | p50 | p99 | CPU/request | non-2xx | "
            "req/s × bare aiohttp | CPU × bare aiohttp | req/s × nginx |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lines = [head]
    for name, label in LABELS.items():
        s = summary.get(name)
        if not s or name.startswith("register"):
            continue
        lines.append(f"| {label} | {s.get('processes') or ''} | {fmt_value(s['rps'], '')} | "
                     f"{fmt_value(s['p50_ms'], 'ms')} | {fmt_value(s['p99_ms'], 'ms')} | "
                     f"{fmt_value(s.get('cpu_us'), 'µs')} | {s['non2xx']} | "
                     f"{fmt_value(s.get('ratio_to_aiohttp'), '×')} | "
                     f"{fmt_value(s.get('cpu_to_aiohttp'), '×')} | "
                     f"{fmt_value(s.get('ratio_to_nginx'), '×')} |")
    return "\n".join(lines)


LABELS = {
    "nginx": "nginx, fixed answer (ceiling)",
    "aiohttp": "bare aiohttp+uvloop, fixed answer (reference)",
    "warm": "warm resolve via recursive node",
    "warm_nometrics": "warm resolve via recursive node, metrics.enabled=0",
    "cold": "cold resolve via recursive node, answer cache off",
    "secondary": "resolve directly at a secondary node",
    "register": "durable single registrations (PUT, 201), 2 nodes at once",
    "register_one": "durable single registrations (PUT, 201), 1 node",
}


# ------------------------------------------------------------------ plots

def plot_resolve(summary: dict, rounds: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("nginx", "aiohttp", "warm", "cold", "secondary") if n in summary]
    labels = [{"nginx": "nginx\n(fixed answer)", "aiohttp": "bare aiohttp\n(reference)",
               "warm": "warm\n(recursive, cached)", "cold": "cold\n(recursive, no cache)",
               "secondary": "secondary\n(direct)"}[n] for n in names]
    meds = [summary[n]["rps"] or 0 for n in names]
    lows = [min(r[n]["rps"] for r in rounds) for n in names]
    highs = [max(r[n]["rps"] for r in rounds) for n in names]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    bars = ax.bar(labels, meds, color=["#999999", "#555555", "#2b7bba", "#7fb3de", "#e08a2c"][:len(names)],
                  yerr=[[m - lo for m, lo in zip(meds, lows)], [hi - m for m, hi in zip(meds, highs)]],
                  capsize=5)
    for bar, n in zip(bars, names):
        r = summary[n].get("ratio_to_aiohttp")
        ax.annotate(f"{bar.get_height():,.0f} req/s\n{r:.2f}× aiohttp" if r else "",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("requests/s (median of rounds; bars: min–max)")
    ax.set_title(f"Resolve throughput, wrk -t2 -c64, {len(rounds)} interleaved round(s)")
    ax.set_ylim(0, max(highs) * 1.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_store(store: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = store["sizes"]
    labels = [f"{s:,}" for s in sizes]
    rates = [store["summary"][str(s)]["rps"] for s in sizes]
    mem = [(store["rss_anon_kib"].get(str(s)) or 0) / 1024 for s in sizes]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4.2), dpi=110)
    bars = a1.bar(labels, rates, color=["#7fb3de", "#2b7bba"][:len(sizes)])
    for i, bar in enumerate(bars):
        text = f"{rates[i]:,.0f} req/s"
        if i and store.get("ratio"):
            text += f"\n{store['ratio']:.2f}× the {sizes[0]:,} store"
        a1.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9)
    a1.set_ylim(0, max(rates) * 1.3)
    a1.set_xlabel("identifiers in the node's store")
    a1.set_ylabel("random lookups/s at the secondary node")
    a1.set_title("Resolve rate vs store size")
    bars = a2.bar(labels, mem, color="#e08a2c")
    for bar in bars:
        a2.annotate(f"{bar.get_height():,.0f} MiB", (bar.get_x() + bar.get_width() / 2,
                                                       bar.get_height()),
                    xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    a2.set_ylim(0, max(mem + [1]) * 1.3)
    a2.set_xlabel("identifiers in the node's store")
    a2.set_ylabel("RssAnon of the serving process (MiB)")
    a2.set_title("Anonymous memory")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------ the results table

def _rate(v: float | None, unit: str = "req/s") -> str:
    return "—" if v is None else f"{v:,.0f} {unit}"


def _lat(s: dict) -> str:
    if s.get("p50_ms") is None:
        return ""
    return f" (p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms)"


def result_rows(res: dict, checks: list[Check]) -> list[dict]:
    """One row per target (its figure, the reference, the ratio and PASS / MISS by how much),
    then the figures no target judges."""
    summ = res["resolve"]["summary"]
    store = res["store_size"]
    T = TARGETS
    by = {c.target.name: c for c in checks}
    small, large = (str(x) for x in store["sizes"])
    cm = res.get("cache_memory") or {}

    def row(key: str, figure: str, value: str, reference: str = "—", shown=None) -> dict:
        c = by[T[key].name]
        t = T[key]
        ratio_text = fmt_value(c.value, "×") if t.unit == "×" else ""
        return {"figure": figure, "value": value, "reference": reference,
                "ratio": ratio_text if shown is None else shown, "target": fmt_target(t),
                "result": c.describe()}

    def scen(name: str, unit: str = "req/s", key: str = "rps") -> str:
        s = summ.get(name) or {}
        cpu = f", {s['cpu_us']:.1f} µs CPU/request" if s.get("cpu_us") is not None else ""
        n = s.get("processes")
        procs = f" [{n} process{'es' if n > 1 else ''}]" if n else ""
        return _rate(s.get(key), unit) + _lat(s) + cpu + procs

    aio = scen("aiohttp")
    rows = [
        {"figure": LABELS["nginx"], "value": scen("nginx"), "reference": "—", "ratio": "",
         "target": "—", "result": "ceiling"},
        {"figure": LABELS["aiohttp"], "value": aio, "reference": "—", "ratio": "1.00×",
         "target": "—", "result": "reference"},
        row("warm_rate", LABELS["warm"], scen("warm"), "bare aiohttp"),
        row("warm_p99", LABELS["warm"] + ", p99", fmt_value((summ.get("warm") or {}).get("p99_ms"),
                                                             "ms")),
        row("warm_cpu", LABELS["warm"] + ", CPU per request",
            fmt_value((summ.get("warm") or {}).get("cpu_us"), "µs"), "bare aiohttp"),
        row("secondary_rate", LABELS["secondary"], scen("secondary"), "bare aiohttp"),
        row("secondary_cpu", LABELS["secondary"] + ", CPU per request",
            fmt_value((summ.get("secondary") or {}).get("cpu_us"), "µs"), "bare aiohttp"),
        row("cold", LABELS["cold"], scen("cold"), "warm resolve"),
        row("register", LABELS["register_one"],
            scen("register_one", "reg/s", "rate"), "warm resolve"),
        row("batch", "batch registration (POST /api/batch/register, 1,000 per batch, 1 node)",
            _rate((summ.get("batch") or {}).get("rate"), "ids/s")),
        row("metrics", LABELS["warm"] + ": CPU per request with metrics on vs off",
            f"{fmt_value((summ.get('warm') or {}).get('cpu_us'), 'µs')} on, "
            f"{fmt_value((summ.get('warm_nometrics') or {}).get('cpu_us'), 'µs')} off",
            "metrics.enabled=0"),
        row("answer_memory", "recursive answer cache: anonymous memory per cached demo answer",
            (f"{cm['per_entry_bytes']:,.0f} B (the cache counts "
             f"{cm['counted_per_entry_bytes']:,.0f} B; {cm['entries']:,} answers)") if cm else "—",
            "the same processes before"),
        row("warm_nginx", LABELS["warm"] + " vs the ceiling", scen("warm"), "nginx"),
        row("store", f"random lookups at a secondary node, {int(large):,} identifiers",
            _rate(store["summary"][large]["rps"]) + _lat(store["summary"][large]),
            f"{int(small):,} store"),
        row("memory", f"whole network RssAnon, {int(large):,}-identifier store loaded",
            fmt_value(store["cluster_rss_anon_total_kib"] / 2**20, "GiB")),
    ]
    info = [
        ("register", "reg/s", "rate", "warm resolve", "ratio_to_warm"),
        ("locust", "req/s", "rps", "wrk warm resolve", "ratio_to_warm"),
    ]
    for name, unit, key, ref, rkey in info:
        if summ.get(name):
            rows.append({"figure": LABELS.get(name, "warm resolve through Locust (1 process)"),
                         "value": scen(name, unit, key), "reference": ref,
                         "ratio": fmt_value(summ[name].get(rkey), "×"), "target": "—",
                         "result": ""})
    rows.append({"figure": "unexpected answers (non-2xx, socket errors, failed registrations)",
                 "value": f"{res['unexpected_answers']:,}", "reference": "—", "ratio": "",
                 "target": "0", "result": "PASS" if res["unexpected_answers"] == 0 else "MISS"})
    return rows


def results_table(res: dict, checks: list[Check]) -> str:
    return table(result_rows(res, checks))


def store_table(store: dict) -> str:
    lines = ["| identifiers | build | req/s | p50 | p99 | RssAnon of the node |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for size in store["sizes"]:
        k = str(size)
        b = store["builds"][k]
        s = store["summary"][k]
        built = f"{b['build_seconds']:.0f} s" + (" (cached)" if b["cached"] else "")
        lines.append(f"| {size:,} | {built} | {fmt_value(s['rps'], '')} | "
                     f"{fmt_value(s['p50_ms'], 'ms')} | {fmt_value(s['p99_ms'], 'ms')} | "
                     f"{fmt_value((store['rss_anon_kib'][k] or 0) / 1024, 'MiB')} |")
    return "\n".join(lines)
