"""``resolver.observe``: per-node views from two hand-written /metrics expositions (the
contract's names), and network totals from two /api/stats documents. Pure: no I/O, no time."""
from __future__ import annotations

import math

import pytest

from resolver import observe

LE = ["0.001", "0.01", "0.1", "+Inf"]


def exposition(node: str, *, resolves: int, stats: int, buckets: list[int], hits: int,
               asked: int, records: int, process: str = "0", other: str = "") -> str:
    """Exposition text as prometheus_client writes it for one node in one process."""
    lab = f'node="{node}",process="{process}"'
    lines = [
        "# HELP idsim_requests_total Requests by operation.",
        "# TYPE idsim_requests_total counter",
        f'idsim_requests_total{{{lab},role="recursive",op="resolve"}} {resolves}.0',
        f'idsim_requests_total{{{lab},role="recursive",op="stats"}} {stats}.0',
        f'idsim_requests_created{{{lab},role="recursive",op="resolve"}} 1.7e9',
        "# HELP idsim_request_duration_seconds Time to answer.",
        "# TYPE idsim_request_duration_seconds histogram",
    ]
    for le, n in zip(LE, buckets):
        lines.append(f'idsim_request_duration_seconds_bucket{{{lab},role="recursive",'
                     f'op="resolve",le="{le}"}} {n}.0')
        lines.append(f'idsim_request_duration_seconds_bucket{{{lab},role="recursive",'
                     f'op="stats",le="{le}"}} {stats}.0')  # not work: left out of p99
    lines += [
        f'idsim_request_duration_seconds_count{{{lab},role="recursive",op="resolve"}} '
        f'{buckets[-1]}.0',
        f'idsim_request_duration_seconds_sum{{{lab},role="recursive",op="resolve"}} 0.5',
        "# HELP idsim_cache_requests_total Cache lookups.",
        "# TYPE idsim_cache_requests_total counter",
        f'idsim_cache_requests_total{{{lab},cache="answer"}} {asked}.0',
        f'idsim_cache_requests_total{{{lab},cache="delegation"}} 999.0',
        "# HELP idsim_cache_hits_total Cache hits.",
        "# TYPE idsim_cache_hits_total counter",
        f'idsim_cache_hits_total{{{lab},cache="answer"}} {hits}.0',
        f'idsim_cache_hits_total{{{lab},cache="delegation"}} 999.0',
        "# HELP idsim_records Records stored.",
        "# TYPE idsim_records gauge",
        f'idsim_records{{{lab}}} {records}.0',
        "# HELP idsim_build_info Build.",
        "# TYPE idsim_build_info gauge",
        'idsim_build_info{version="0.1.0"} 1.0',
    ]
    return "\n".join(lines) + "\n" + other


def test_parse_sums_work_ops_and_keeps_the_answer_cache():
    s = observe.parse(exposition("recursive", resolves=10, stats=7, buckets=[2, 6, 9, 10],
                                 hits=8, asked=10, records=0))["recursive"]
    assert s.requests == 10  # the stats op is not work
    assert s.buckets == {0.001: 2, 0.01: 6, 0.1: 9, math.inf: 10}
    assert (s.cache_hits, s.cache_requests, s.records) == (8, 10, 0)


def test_processes_are_summed_and_nodes_kept_apart():
    text = (exposition("recursive", resolves=10, stats=0, buckets=[1, 2, 3, 10], hits=1,
                       asked=2, records=5, process="0")
            + exposition("recursive", resolves=5, stats=0, buckets=[1, 1, 1, 5], hits=1,
                         asked=2, records=5, process="1").split("\n", 2)[2])
    # prometheus_client's parser wants one family block: join the two processes' samples
    merged = "\n".join(sorted(set(text.splitlines()), key=text.splitlines().index)) + "\n"
    s = observe.parse(merged)["recursive"]
    assert s.requests == 15 and s.buckets[math.inf] == 15
    assert (s.cache_hits, s.cache_requests) == (2, 4)
    assert s.records == 5  # the same store seen by both: not doubled


def test_view_between_two_scrapes():
    before = observe.parse(exposition("r", resolves=100, stats=3, buckets=[50, 90, 100, 100],
                                      hits=80, asked=100, records=7))["r"]
    after = observe.parse(exposition("r", resolves=300, stats=90, buckets=[50, 90, 298, 300],
                                     hits=230, asked=300, records=9))["r"]
    v = observe.view(before, after, 2.0)
    assert v.rate == pytest.approx(100.0)  # 200 work requests in 2 s; stats polls not counted
    # 200 new answers: 0 below 10 ms, 198 in (10 ms, 100 ms], 2 above: rank 198 -> 100 ms
    assert v.p99 == pytest.approx(0.1)
    assert v.hit_ratio == pytest.approx(150 / 200)
    assert v.records == 9


def test_p99_interpolates_inside_the_bucket_and_inf_gives_the_largest_bound():
    assert observe.quantile(0.99, {0.001: 0, 0.01: 100, math.inf: 100}) == pytest.approx(
        0.001 + 0.009 * 0.99)
    assert observe.quantile(0.5, {0.001: 50, 0.01: 100, math.inf: 100}) == pytest.approx(0.001)
    assert observe.quantile(0.99, {0.001: 10, 0.01: 20, math.inf: 100}) == 0.01
    assert observe.quantile(0.99, {0.001: 0, math.inf: 0}) is None
    assert observe.quantile(0.99, {}) is None


def test_a_restarted_process_counts_from_zero():
    before = observe.parse(exposition("r", resolves=1000, stats=0, buckets=[1000] * 4,
                                      hits=900, asked=1000, records=1))["r"]
    after = observe.parse(exposition("r", resolves=40, stats=0, buckets=[40] * 4, hits=30,
                                     asked=40, records=1))["r"]
    v = observe.view(before, after, 4.0)
    assert v.rate == 10.0 and v.hit_ratio == 0.75 and v.p99 == pytest.approx(0.00099)


def test_unknowns_are_none():
    first = observe.parse(exposition("r", resolves=1, stats=0, buckets=[1] * 4, hits=0,
                                     asked=0, records=3))["r"]
    assert observe.view(None, first, 1.0) == observe.View(records=3)
    assert observe.view(first, None, 1.0) == observe.View()
    idle = observe.view(first, first, 1.0)
    assert idle.rate == 0.0 and idle.p99 is None and idle.hit_ratio is None
    secondary = observe.parse('# TYPE idsim_records gauge\nidsim_records{node="88.118"} 12.0\n')
    assert observe.view(secondary["88.118"], secondary["88.118"], 1.0).hit_ratio is None


def test_totals_rates_from_two_stats_documents():
    a = {"totals": {"enterprises": 12, "identifiers": 120, "resolutions": 10,
                    "recursiveResolutions": 100, "registrations": 5, "secondaryNodes": 3}}
    b = {"totals": {"enterprises": 13, "identifiers": 130, "resolutions": 30,
                    "recursiveResolutions": 180, "registrations": 15, "secondaryNodes": 3}}
    t = observe.totals(a, b, 2.0)
    assert t == {"enterprises": 13, "identifiers": 130, "secondaryNodes": 3,
                 "resolutionsPerSecond": 50.0, "registrationsPerSecond": 5.0}
    assert observe.totals(None, b, 2.0)["resolutionsPerSecond"] is None
    assert observe.totals(a, None, 2.0)["enterprises"] is None


def test_the_line_scanner_agrees_with_prometheus_clients_parser():
    """What prometheus_client writes (a process of several nodes, every op, escaped label
    values elsewhere) reads the same through ``observe.samples`` as through its own parser."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    reg = CollectorRegistry()
    req = Counter("idsim_requests_total", "r", ["node", "role", "op", "process"], registry=reg)
    dur = Histogram("idsim_request_duration_seconds", "d", ["node", "role", "op", "process"],
                    registry=reg, buckets=[0.00025, 0.001, 0.004, 0.016, 0.064, 0.256, 1, 8])
    hits = Counter("idsim_cache_hits_total", "h", ["node", "cache", "process"], registry=reg)
    rec = Gauge("idsim_records", "n", ["node", "process"], registry=reg)
    odd = Counter("idsim_upstream_failures_total", "f", ["node", "peer", "method"],
                  registry=reg)
    odd.labels("recursive", 'a "quoted" \\ peer}', "resolve").inc()
    for k, node in enumerate(["top", "88.101", "88.118"]):
        for j, op in enumerate(["resolve", "register", "stats", "other"]):
            req.labels(node, "secondary", op, "0").inc(10 * k + j + 1)
            for x in range(k + j + 1):
                dur.labels(node, "secondary", op, "0").observe(0.0003 * (x + 1) ** 3)
        hits.labels(node, "answer", "0").inc(k)
        rec.labels(node, "0").set(100 + k)
    text = generate_latest(reg).decode()
    ours = sorted((n, sorted(lab.items()), v) for n, lab, v in observe.samples(text))
    wanted = ("idsim_requests_total", "idsim_request_duration_seconds_bucket",
              "idsim_cache_hits_total", "idsim_records")
    theirs = sorted((s.name, sorted(s.labels.items()), s.value)
                    for fam in text_string_to_metric_families(text) for s in fam.samples
                    if s.name in wanted)
    assert ours == theirs and len(ours) > 50


def test_node_resolutions_from_two_stats_documents():
    a = {"nodes": [{"node": "88.101", "resolutions": 10}, {"node": "88.118", "resolutions": 0}]}
    b = {"nodes": [{"node": "88.101", "resolutions": 30}, {"node": "88.118", "resolutions": 4},
                   {"node": "88.201", "resolutions": 9}]}
    assert observe.node_resolutions(a, b, 2.0) == {"88.101": 10.0, "88.118": 2.0}
    assert observe.node_resolutions(None, b, 2.0) == {}
