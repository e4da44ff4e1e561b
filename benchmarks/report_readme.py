"""The prose of ``benchmarks/README.md`` around the tables ``benchmarks.report`` makes.

``readme(res, checks)`` is the whole generated file; ``run.py`` keeps the sections single
benchmarks wrote into it (``benchmarks.readme_sections``).
"""
from __future__ import annotations

from benchmarks.report import detail_table, results_table, store_table
from benchmarks.targets import Check


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
run. Every figure is set against a reference measured in the same round: the bare
aiohttp+uvloop server of `benchmarks/cpu_per_request.py` (one process answering a fixed
Handle-like record: the floor of any aiohttp handler) for the issue-14 targets, nginx
answering the same kind of fixed JSON as the ceiling. The scenarios run in interleaved rounds
(the resolve scenarios in rotated order), and the table shows the median over rounds of each
value and of each per-round ratio. A MISS says by how much, as a share of the target.

**CPU per request** is the CPU time (user + system, all threads, from psutil) the processes
serving a scenario spent over its wrk run, divided by the requests wrk got answered: it holds
far better than rates while other work shares the machine. Every idsim figure runs as a user
starts it: as many processes per node as `topology.cluster.default_processes()`
({res['resolve'].get('processes', {}).get('recursive', '?')} for the recursive node,
{res['resolve'].get('processes', {}).get('secondary', '?')} for the secondary node here; one
where the tree has no `default_processes()` yet, as a secondary node then ran in one).

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
- **bare aiohttp**: aiohttp's low-level server under uvloop in one process answering a fixed
  ~200-byte record to the same requests (`REFERENCE_SERVER` in `cpu_per_request.py`).
- **warm resolve**: `GET /api/handles/<prefix>/SN…` through the recursive node (its processes
  sharing its port with SO_REUSEPORT), identifiers picked uniformly from all
  {12 * s['per_enterprise']:,} demo identifiers, after one warm-up pass. Answer-cache hits
  over the measured runs: {f"{hit:.0%}" if hit is not None else "unknown"}.
- **metrics off**: the same warm load through a third recursive node, started with
  `--set metrics.enabled=0`; the metrics target is warm CPU per request over this one's.
- **cold resolve**: the same through a recursive node with `--answer-cache 0`: every request
  makes an RPC to the secondary node (delegations stay cached). Its target is relative to warm.
- **resolve directly at a secondary node**: the same picks over that node's own prefixes, no
  recursion; the node runs in its own processes (the top-level node and the other secondary
  nodes in another).
- **durable single registrations**: wrk PUTs new handles (`?overwrite=false`) with the
  enterprise's Basic login to the node serving it; only `201 Created` answers are counted,
  and each is on disk (fsync, group commit) before it is answered. Measured at one node (the
  secondary node in its default processes: the target is judged on this one) and at two
  nodes at once, half the connections each.
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
- **recursive answer cache memory**: the recursive processes' RssAnon after the recursive
  pass over the large store minus before it, ÷ the answers they cached then (plain demo
  records of ~490 B of JSON, as in `benchmarks.stores`), beside what the caches count against
  their byte budget. `tests/test_answer_memory.py` measures the same with tracemalloc. The
  resolve network's demo records carry an industry template (~1,250 B of JSON each, kept as
  it is sent): those cost ~760 B more each.
- **whole network RssAnon**: the sum over every process of the network holding the large
  store (top-level + other secondaries, the large node, the recursive processes), after one
  {s['seconds']} s wrk pass through the recursive node over the large store's range filled its
  caches.

## Host log findings

{prob_text}
"""
