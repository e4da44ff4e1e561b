"""Summaries, target checks, the README table, plots and the machine description.

``check``, ``median`` and ``summarise_ratio`` are pure: tests use them without wrk or nginx.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

GiB = 2**30


# ------------------------------------------------------------------ pure parts

def median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


@dataclass(frozen=True)
class Target:
    name: str
    kind: str      # "min": value must be at least limit; "max": at most
    limit: float
    unit: str      # "×", "ids/s", "GiB"
    reference: str = ""


@dataclass(frozen=True)
class Check:
    target: Target
    value: float | None
    passed: bool
    shortfall: float | None  # fraction of the limit missed (0 when passed; None if no value)

    @property
    def mark(self) -> str:
        return "PASS" if self.passed else "MISS"

    def describe(self) -> str:
        if self.value is None:
            return "MISS (not measured)"
        if self.passed:
            return "PASS"
        word = "short" if self.target.kind == "min" else "over"
        return f"MISS ({self.shortfall:.0%} {word})"

    def as_dict(self) -> dict:
        return {**asdict(self.target), "value": self.value, "passed": self.passed,
                "shortfall": self.shortfall, "result": self.describe()}


def check(target: Target, value: float | None) -> Check:
    """PASS when ``value`` meets the target; the shortfall is how far off, as a fraction of
    the limit (``min`` 0.20, value 0.15 → 0.25 short; ``max`` 1.5, value 1.8 → 0.2 over)."""
    if value is None:
        return Check(target, None, False, None)
    if target.kind == "min":
        ok = value >= target.limit
        miss = (target.limit - value) / target.limit
    elif target.kind == "max":
        ok = value <= target.limit
        miss = (value - target.limit) / target.limit
    else:
        raise ValueError(f"target kind must be 'min' or 'max', not {target.kind!r}")
    return Check(target, value, ok, 0.0 if ok else miss)


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
    return f"{value:,.0f} {unit}".rstrip()


def fmt_target(t: Target) -> str:
    op = "≥" if t.kind == "min" else "≤"
    limit = f"{t.limit:g}×" if t.unit == "×" else fmt_value(t.limit, t.unit)
    return f"{op} {limit}" + (f" {t.reference}" if t.unit == "×" and t.reference else "")


def cache_memory(resolve: dict, default_entries: int = 1_000_000) -> dict | None:
    """What one cached answer costs a recursive process in anonymous memory, estimated as
    (mean RssAnon of the warm processes − that of the cold ones, which cache no answers)
    / answers cached per warm process; beside it, what the cache itself counts per entry
    (``cacheBytes / cacheEntries`` as reported to the top-level node)."""
    rss = resolve.get("rss_anon_kib") or {}
    rows = list(((resolve.get("recursive_cache") or {}).get("after") or {}).values())
    warm_rss = [v for k, v in rss.items() if k.startswith("warm") and v]
    cold_all = [v for k, v in rss.items() if k.startswith("cold") and v]
    warm_rows = [r for r in rows if r.get("cacheEntries")]
    if not warm_rss or not cold_all or not warm_rows:
        return None
    cold_rss = sum(cold_all) / len(cold_all)
    entries = sum(r["cacheEntries"] for r in warm_rows) / len(warm_rows)
    per_entry = (sum(warm_rss) / len(warm_rss) - cold_rss) * 1024 / entries
    counted = sum(r.get("cacheBytes", 0) for r in warm_rows) / sum(r["cacheEntries"] for r in warm_rows)
    return {"entries_per_process": entries, "per_entry_bytes": per_entry,
            "counted_per_entry_bytes": counted,
            "undercount": per_entry / counted if counted else None,
            "default_entries": default_entries,
            "projected_gib_per_process": per_entry * default_entries / GiB}


TARGETS = {
    "warm": Target("warm resolve vs nginx", "min", 0.20, "×", "nginx"),
    "cold": Target("cold resolve vs warm resolve", "min", 0.5, "×", "warm"),
    "register": Target("durable single registrations vs warm resolve", "min", 0.5, "×", "warm"),
    "batch": Target("batch registration", "min", 50_000, "ids/s"),
    "store": Target("resolve rate, large store vs small store", "min", 0.8, "×", "small store"),
    "memory": Target("cluster anonymous memory with the large store", "max", 1.5, "GiB"),
}


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
    head = ("| scenario | req/s | p50 | p99 | non-2xx | ratio to nginx |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |")
    lines = [head]
    for name, label in LABELS.items():
        s = summary.get(name)
        if not s:
            continue
        lines.append(f"| {label} | {fmt_value(s.get('rps', s.get('rate')), '')} | {fmt_value(s['p50_ms'], 'ms')} | "
                     f"{fmt_value(s['p99_ms'], 'ms')} | {s['non2xx']} | "
                     f"{fmt_value(s.get('ratio_to_nginx'), '×')} |")
    return "\n".join(lines)


LABELS = {
    "nginx": "nginx, fixed answer (ceiling)",
    "warm": "warm resolve via recursive node (2 processes)",
    "cold": "cold resolve via recursive node, answer cache off",
    "secondary": "resolve directly at a secondary node",
    "register": "durable single registrations (PUT, 201), 2 nodes in 2 processes",
    "register_one": "durable single registrations (PUT, 201), 1 node (1 process)",
}


# ------------------------------------------------------------------ plots

def plot_resolve(summary: dict, rounds: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["nginx", "warm", "cold", "secondary"]
    labels = ["nginx\n(fixed answer)", "warm\n(recursive, cached)", "cold\n(recursive, no cache)",
              "secondary\n(direct)"]
    meds = [summary[n]["rps"] or 0 for n in names]
    lows = [min(r[n]["rps"] for r in rounds) for n in names]
    highs = [max(r[n]["rps"] for r in rounds) for n in names]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    bars = ax.bar(labels, meds, color=["#999999", "#2b7bba", "#7fb3de", "#e08a2c"],
                  yerr=[[m - lo for m, lo in zip(meds, lows)], [hi - m for m, hi in zip(meds, highs)]],
                  capsize=5)
    for bar, n in zip(bars, names):
        r = summary[n].get("ratio_to_nginx")
        ax.annotate(f"{bar.get_height():,.0f} req/s\n{r:.2f}× nginx" if r else "",
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
    summ = res["resolve"]["summary"]
    store = res["store_size"]
    by = {c.target.name: c for c in checks}
    T = TARGETS

    def verdict(key: str) -> dict:
        c = by[T[key].name]
        return {"target": fmt_target(T[key]), "result": c.describe()}
    small, large = (str(x) for x in store["sizes"])
    rows = [
        {"figure": LABELS["nginx"], "value": _rate(summ["nginx"]["rps"]) + _lat(summ["nginx"]),
         "reference": "—", "ratio": "1.00×", "target": "—", "result": "reference"},
        {"figure": LABELS["warm"], "value": _rate(summ["warm"]["rps"]) + _lat(summ["warm"]),
         "reference": "nginx", "ratio": fmt_value(summ["warm"]["ratio_to_nginx"], "×"),
         **verdict("warm")},
        {"figure": LABELS["cold"], "value": _rate(summ["cold"]["rps"]) + _lat(summ["cold"]),
         "reference": "warm resolve", "ratio": fmt_value(summ["cold"]["ratio_to_warm"], "×"),
         **verdict("cold")},
        {"figure": LABELS["secondary"],
         "value": _rate(summ["secondary"]["rps"]) + _lat(summ["secondary"]),
         "reference": "nginx", "ratio": fmt_value(summ["secondary"]["ratio_to_nginx"], "×"),
         "target": "—", "result": ""},
        {"figure": LABELS["register"],
         "value": _rate(summ["register"]["rate"], "reg/s") + _lat(summ["register"]),
         "reference": "warm resolve", "ratio": fmt_value(summ["register"]["ratio_to_warm"], "×"),
         **verdict("register")},
        {"figure": LABELS["register_one"],
         "value": _rate(summ["register_one"]["rate"], "reg/s") + _lat(summ["register_one"]),
         "reference": "warm resolve",
         "ratio": fmt_value(summ["register_one"]["ratio_to_warm"], "×"),
         "target": "—", "result": ""},
        {"figure": "batch registration (POST /api/batch/register, 1,000 per batch, 1 node)",
         "value": _rate(summ["batch"]["rate"], "ids/s"),
         "reference": "single registrations, 1 node",
         "ratio": fmt_value(summ["batch"]["ratio_to_register"], "×"), **verdict("batch")},
        {"figure": "warm resolve through Locust (1 process)",
         "value": _rate(summ["locust"]["rps"]) + (f" (Locust CPU {summ['locust']['cpu']:.0%} of a core)"
                                                  if summ["locust"]["cpu"] is not None else ""),
         "reference": "wrk warm resolve", "ratio": fmt_value(summ["locust"]["ratio_to_warm"], "×"),
         "target": "—", "result": ""},
        {"figure": f"random lookups at a secondary node, {int(small):,} identifiers",
         "value": _rate(store["summary"][small]["rps"]) + _lat(store["summary"][small]),
         "reference": "—", "ratio": "", "target": "—", "result": "reference"},
        {"figure": f"random lookups at a secondary node, {int(large):,} identifiers",
         "value": _rate(store["summary"][large]["rps"]) + _lat(store["summary"][large]),
         "reference": f"{int(small):,} store", "ratio": fmt_value(store["ratio"], "×"),
         **verdict("store")},
        {"figure": f"serving process RssAnon, {int(small):,} / {int(large):,} identifiers",
         "value": " / ".join(fmt_value((store["rss_anon_kib"][k] or 0) / 1024, "MiB")
                             for k in (small, large)),
         "reference": "—", "ratio": "", "target": "—", "result": ""},
        {"figure": f"whole network RssAnon, {int(large):,}-identifier store loaded",
         "value": fmt_value(store["cluster_rss_anon_total_kib"] / 2**20, "GiB"),
         "reference": "—", "ratio": "", **verdict("memory")},
        *([{"figure": "recursive answer cache: anonymous memory per cached answer",
            "value": f"{cm['per_entry_bytes']:,.0f} B (the cache counts "
                     f"{cm['counted_per_entry_bytes']:,.0f} B)",
            "reference": "cold process (no answers cached)",
            "ratio": fmt_value(cm["undercount"], "×"),
            "target": "—",
            "result": f"{cm['projected_gib_per_process']:.1f} GiB per process at "
                      f"{cm['default_entries']:,} entries"}]
          if (cm := res.get("cache_memory")) else []),
        {"figure": "unexpected answers (non-2xx, socket errors, failed registrations)",
         "value": f"{res['unexpected_answers']:,}", "reference": "—", "ratio": "",
         "target": "0", "result": "PASS" if res["unexpected_answers"] == 0 else "MISS"},
    ]
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


def readme(res: dict, checks: list[Check]) -> str:
    m = res["machine"]
    s = res["settings"]
    store = res["store_size"]
    small, large = store["sizes"]
    cache = res["resolve"].get("recursive_cache", {})
    hit = cache.get("hit_share")
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    problems = {**{f"resolve network: {k}": v for k, v in res["resolve"]["log_problems"].items()},
                **{f"{int(size):,} store network: {k}": v
                   for size, logs in store["log_problems"].items() for k, v in logs.items()}}
    prob_text = ("\n".join(f"- {where}: `{lines[0][:200]}`" + (f" (+{len(lines) - 1} more lines)"
                                                              if len(lines) > 1 else "")
                           for where, lines in problems.items())
                 if problems else "None: no tracebacks, errors or warnings in any host log.")
    return f"""\
# Benchmarks

```sh
python benchmarks/run.py            # full suite: 3 rounds of 10 s runs, 1M and 10M stores (~10 min)
python benchmarks/run.py --quick    # smoke run: 1 round of 3 s runs, 100k and 1M stores (< 2 min)
```

It installs wrk and nginx with apt-get if they are missing, starts everything it measures on
127.0.0.1 (temporary data directories, free ports), stops it all at the end (also on Ctrl-C),
and writes `results/latest.json` (every raw number), `results/resolve.png`,
`results/store_size.png` and this file. Large stores are built once and cached in
`.cache/` (git-ignored) by size.

**Why ratios.** The machine is small (2 cores) and shared, so absolute rates wander from run to
run. Every figure is set against a reference measured in the same round (nginx answering a
fixed ~200-byte Handle-like JSON is the ceiling; each target names its own reference), the
scenarios run in interleaved rounds (the resolve scenarios in rotated order), and the table
shows the median over rounds of each value and of each per-round ratio.

## Latest run

{m['date']}, `{res['mode']}` mode: {s['rounds']} round(s) of {s['seconds']} s runs,
wrk `-t2 -c64 --latency`, {s['per_enterprise']:,} demo identifiers per enterprise
(12 enterprises), took {res['duration_s']:.0f} s. Commit `{(m['git_commit'] or '?')[:12]}`
{f"(with uncommitted changes, diff sha1 `{m.get('git_diff_sha1')}`)" if m['git_dirty'] else ""}.

Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']},
Python {m['python']}; {m['wrk']}; {m['nginx']}; {pk}. Load average at start
{', '.join(f'{x:.2f}' for x in m['loadavg_start'])}, at end
{', '.join(f'{x:.2f}' for x in m.get('loadavg_end', ()))}.

{results_table(res, checks)}

Resolve scenarios in detail (medians over rounds):

{detail_table(res['resolve']['summary'])}

Store size (one secondary node process, random lookups over the whole key range):

{store_table(store)}

![resolve throughput](results/resolve.png)
![store size](results/store_size.png)

## What each figure means

- **nginx, fixed answer**: `return 200 '<json>'` with 2 workers, no access log. No real
  server on this machine answers faster, so it calibrates the machine and the load generator.
- **warm resolve**: `GET /api/handles/<prefix>/SN…` through the recursive node (2 processes
  sharing its port with SO_REUSEPORT), identifiers picked uniformly from all
  {12 * s['per_enterprise']:,} demo identifiers, after one warm-up pass. Answer-cache hits
  over the measured runs: {f"{hit:.0%}" if hit is not None else "unknown"}.
- **cold resolve**: the same through a recursive node with `--answer-cache 0`: every request
  makes an RPC to the secondary node (delegations stay cached). Its target is relative to warm.
- **resolve directly at a secondary node**: the same picks over that node's own prefixes, no
  recursion; the secondary shares one process with the top-level node, the other two
  secondary nodes run in a second process.
- **durable single registrations**: wrk PUTs new handles (`?overwrite=false`) with the
  enterprise's Basic login to the node serving it; only `201 Created` answers are counted,
  and each is on disk (fsync, group commit) before it is answered. Measured at one node (one
  process: what one secondary node takes) and at two nodes served by two processes at once,
  half the connections each (every core in use, as in the warm resolve figure it is set
  against: the target is judged on this one).
- **batch registration**: an aiohttp client keeps {s['batch_concurrency']} POSTs of
  {s['batch_size']:,} new identifiers in flight for {s['seconds']} s; identifiers registered per
  second (each batch is one durable commit).
- **Locust**: the warm resolve load (same uniform picks) from `loadtest.runner` with
  {s['locust_users']} users in one Locust process. The gap to wrk is the load generator's cost:
  Locust measures itself once its CPU nears one core.
- **store size**: node 88.118 serving {small:,} or {large:,} demo identifiers under 88.118.8
  (written straight into LMDB with the store API; the node adds its own `0.NA` records when it
  starts), the store file read into the page cache first, wrk picking uniformly over the whole
  range. RssAnon (anonymous resident memory, from `/proc/PID/status`) shows the records stay
  in the file-backed memory map, not the Python heap.
- **recursive answer cache memory**: (RssAnon of a warm recursive process − RssAnon of the
  cold one) ÷ answers it caches, after the resolve rounds; the ratio is that over what the
  cache counts against its byte budget, and the result projects it to the default
  `--answer-cache` size. An estimate (the processes differ in more than their caches), but
  it shows whether the cache's budget means what it says.
- **whole network RssAnon**: the sum over every process of the network holding the large
  store (top-level + other secondaries, the large node, 2 recursive processes), after one
  {s['seconds']} s wrk pass through the recursive node over the large store's range filled its
  caches.

## Host log findings

{prob_text}
"""
