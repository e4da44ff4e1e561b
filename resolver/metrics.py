"""Prometheus metrics of one node, served at ``GET /metrics`` on the node's own HTTP port.

What is counted where:
* requests: ``RequestStats`` holds, per ``op``, plain integers: responses per Handle
  responseCode, histogram bucket counts (``bisect`` on ``BUCKETS``) and the sum of durations.
  ``NodeAPI.__call__`` adds one observation per request (``OpStats.observe``): a few list and
  dict increments, no prometheus_client call and no lock on the hot path;
* caches: ``resolver.cache.TTLCache``'s own integer counters, read at scrape time;
* upstream calls: ``UpstreamStats``, fed by ``RpcClient.observer`` and the recursive node's
  forwarded HTTP writes, per (peer, method);
* records: the store's count, computed at scrape time;
* faults: ``idsim_fault_active{node,kind}``, 0/1 per kind, read at scrape time from the
  node's ``faults`` (``resolver.fault_inject.Injector``, absent outside host processes).
A custom collector (``NodeCollector``) turns these into metric families when Prometheus
scrapes; the names and labels are the project's contract (see the preamble / README
"Metrics") and must not change.

One ``CollectorRegistry`` per node, not prometheus_client's global one and not one per
process: a host process runs several nodes, each answering ``/metrics`` on its own port, so
each port must expose only its own node's series (a per-process registry with a ``node`` label
would expose every node of the process on every port, and Prometheus would store each series
once per scraped port).

Several processes serving one port (the recursive node with ``SO_REUSEPORT``): per-process
series with a ``process`` label (a small stable index: 0 for a port served by one process),
not prometheus_client's multiprocess mode. The multiprocess mode keeps values in mmap'd files
written on every increment (a lock and a file write per observation on the hot path), cannot
run the scrape-time callbacks (cache and record gauges) a custom collector needs, and is
global per process (one ``PROMETHEUS_MULTIPROC_DIR``), while nodes here keep separate
registries. Since a scrape reaches one process at random, processes sharing a port exchange
snapshots of their counters (``resolver.metrics_share``) and each scrape answers every
process's series: its own live, the others' as of their last snapshot (``metrics.share_every``
seconds old at most). Readers sum over ``process``.

Request durations are measured with ``time.perf_counter`` in ``NodeAPI.__call__`` (a
measurement, not a decision: no rule reads them); upstream durations with the node's clock,
as every other time of the RPC client.

Invariants: no identifier or prefix is ever a label value (ops, codes, caches, peers and
methods are bounded sets; unknown peers past ``metrics.max_upstream_series`` count as
``other``); counters only grow for the life of the node.
"""
from __future__ import annotations

import bisect
from importlib import metadata

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from resolver.faults import KINDS  # w3: idsim_fault_active

__all__ = ["OPS", "BUCKETS", "OpStats", "RequestStats", "UpstreamStats", "NodeMetrics",
           "NodeCollector", "version"]

OPS = ("resolve", "register", "delete", "list", "batch_resolve", "batch_register", "admin",
       "stats", "redirect", "other")
# Histogram bucket upper bounds (s), 0.25 ms … 8 s: part of the metric contract.
BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.0, 4.0, 8.0)
_LE = tuple(repr(b) for b in BUCKETS) + ("+Inf",)
MAX_CODE = 1000  # Handle responseCodes are below this; anything else counts as ERROR (2)
# An answer's responseCode when it is not 1, kept on the response (set by resolver.http_output).
CODE = web.ResponseKey("code", int)
# The op of each fixed path of the API (``resolver.web``); handles by method, others "other".
PATH_OPS = {"/api/handles": "list", "/api/handles/": "resolve",
            "/api/batch/resolve": "batch_resolve", "/api/batch/register": "batch_register",
            "/api/stats": "stats", "/api/prefixes": "admin", "/api/admin/prefixes": "admin"}


def response_code(payload: bytes) -> int:
    """The responseCode of a Handle-shaped JSON answer (a forwarded write's); 2 (ERROR) when
    there is none or it is out of range, so the label stays bounded."""
    try:
        code = orjson.loads(payload).get("responseCode")
    except (orjson.JSONDecodeError, AttributeError):
        return 2
    return code if type(code) is int and 0 <= code < MAX_CODE else 2


def version() -> str:
    try:
        return metadata.version("idsim")
    except metadata.PackageNotFoundError:
        return "unknown"


class OpStats:
    """Counters of one op: responses per responseCode, duration buckets and sum."""

    __slots__ = ("ok", "codes", "buckets", "total")

    def __init__(self) -> None:
        self.ok = 0  # responseCode 1, the common case, without a dict update
        self.codes: dict[int, int] = {}  # every other responseCode
        self.buckets = [0] * (len(BUCKETS) + 1)  # not cumulative; the last one is +Inf
        self.total = 0.0

    def observe(self, code: int, seconds: float) -> None:
        if code == 1:
            self.ok += 1
        else:
            self.codes[code] = self.codes.get(code, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def state(self) -> list:
        codes = ([(1, self.ok)] if self.ok else []) + list(self.codes.items())
        return [codes, list(self.buckets), self.total]


class RequestStats:
    """Per-op request counters of one node's HTTP API; ``ops[op]`` is that op's ``OpStats``."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops = {op: OpStats() for op in OPS}

    def state(self) -> dict:
        return {op: s.state() for op, s in self.ops.items()}


class UpstreamStats:
    """Calls this node made to its peers: per (peer, method), duration buckets, sum, count
    and failures. At most ``max_series`` pairs; calls to further peers count as ``other``."""

    __slots__ = ("series", "max_series")

    def __init__(self, max_series: int) -> None:
        self.series: dict[tuple[str, str], list] = {}  # -> [buckets, sum, failures]
        self.max_series = max_series

    def record(self, peer: str, method: str, seconds: float, failed: bool) -> None:
        entry = self.series.get((peer, method))
        if entry is None:
            if len(self.series) >= self.max_series:
                peer, method = "other", "other"
            entry = self.series.setdefault((peer, method),
                                           [[0] * (len(BUCKETS) + 1), 0.0, 0])
        entry[0][bisect.bisect_left(BUCKETS, seconds)] += 1
        entry[1] += seconds
        entry[2] += failed

    def observer(self, peer: str):
        """A ``RpcClient.observer`` for calls to ``peer``: ``(method, seconds, failed)``."""
        def observe(method: str, seconds: float, failed: bool) -> None:
            self.record(peer, method, seconds, failed)
        return observe

    def state(self) -> list:
        return [[peer, method, list(b), s, f] for (peer, method), (b, s, f)
                in self.series.items()]


def _histogram(family: HistogramMetricFamily, labels: list[str], buckets, total: float
               ) -> None:
    running, cumulative = 0, []
    for le, n in zip(_LE, buckets):
        running += n
        cumulative.append((le, running))
    family.add_metric(labels, cumulative, total)


def cache_rows(caches) -> list[tuple[str, int, int, int, int, int]]:
    """``(cache, entries, requests, hits, stale_served, evictions)`` of a node's caches (none
    for a node without caches). Negative entries live in the answer cache; they are split out
    by the cache's negative counters."""
    if caches is None:
        return []
    a, d = caches.answers, caches.delegations
    a_requests = a.hits + a.stale_hits + a.misses
    negatives = a.negatives
    return [
        ("answer", len(a) - negatives, a_requests, a.hits - a.negative_hits,
         a.stale_hits - a.negative_stale_hits, a.evictions - a.negative_evictions),
        ("negative", negatives, a_requests, a.negative_hits, a.negative_stale_hits,
         a.negative_evictions),
        ("delegation", len(d), d.hits + d.stale_hits + d.misses, d.hits, d.stale_hits,
         d.evictions),
    ]


def rendered_rows(answers) -> list[tuple[str, int, int, int, int, int]]:
    """The same row for a secondary (or top-level) node's rendered answers
    (``resolver.answer_cache``; "stale_served" is 0: an entry the store no longer matches is
    dropped, never served)."""
    if answers is None:
        return []
    return [("rendered", len(answers), answers.hits + answers.misses + answers.stale,
             answers.hits, 0, answers.evicted)]


def snapshot(node, requests: RequestStats) -> dict:
    """This process's counters of ``node`` as plain data (what ``metrics_share`` exchanges)."""
    upstream = getattr(node, "upstream", None)
    return {"requests": requests.state(),
            "caches": (cache_rows(getattr(node, "caches", None))
                       + rendered_rows(getattr(node, "answers", None))),
            "upstream": upstream.state() if upstream is not None else [],
            "resilience": resilience_rows(node)}


class NodeCollector:
    """Builds every family at scrape time from the node's plain counters, for this process
    (live) and for the processes sharing its port (their last snapshots)."""

    def __init__(self, metrics: "NodeMetrics") -> None:
        self.m = metrics

    def describe(self):
        return []  # no fixed description: families are built at collect time

    def collect(self):
        m = self.m
        node, role = m.node.name, str(m.node.role)
        states = [(str(m.process), snapshot(m.node, m.requests))] + m.others()
        req = CounterMetricFamily("idsim_requests", "HTTP requests answered, per op",
                                  labels=["node", "role", "op", "process"])
        resp = CounterMetricFamily("idsim_responses", "HTTP answers per Handle responseCode",
                                   labels=["node", "role", "op", "code", "process"])
        dur = HistogramMetricFamily("idsim_request_duration_seconds",
                                    "Time to answer an HTTP request, per op",
                                    labels=["node", "role", "op", "process"])
        for process, state in states:
            for op, (codes, buckets, total) in state["requests"].items():
                req.add_metric([node, role, op, process], sum(n for _, n in codes))
                for code, n in codes:
                    resp.add_metric([node, role, op, str(code), process], n)
                _histogram(dur, [node, role, op, process], buckets, total)
        yield from (req, resp, dur)
        yield from self._caches(node, states)
        yield from self._upstream(node, states)
        yield from resilience_families(node, states)
        records = GaugeMetricFamily("idsim_records", "Records stored at this node",
                                    labels=["node"])
        store = getattr(m.node, "store", None)
        if store is not None:
            records.add_metric([node], store.count())
        yield records
        yield fault_family(m.node)  # w3: faults set while running
        if (lag := getattr(m.node, "lag_seconds", None)) is not None:  # a mirror (issue 11)
            family = GaugeMetricFamily("idsim_replication_lag_seconds", "How far this mirror "
                                       "is behind its primary, s (resolver.replication)",
                                       labels=["node"])
            family.add_metric([node], lag())
            yield family
        build = GaugeMetricFamily("idsim_build_info", "idsim version; always 1",
                                  labels=["version"])
        build.add_metric([m.version], 1)
        yield build

    @staticmethod
    def _caches(node: str, states):
        labels = ["node", "cache", "process"]
        entries = GaugeMetricFamily("idsim_cache_entries", "Entries held", labels=labels)
        names = [("requests", "Lookups"), ("hits", "Lookups answered by a fresh entry"),
                 ("stale_served", "Lookups answered by an expired entry (serve-stale)"),
                 ("evictions", "Entries pushed out by capacity")]
        counters = [CounterMetricFamily(f"idsim_cache_{n}", h, labels=labels) for n, h in names]
        for process, state in states:
            for cache, n, *counts in state["caches"]:
                entries.add_metric([node, cache, process], n)
                for family, value in zip(counters, counts):
                    family.add_metric([node, cache, process], value)
        return [entries, *counters]

    @staticmethod
    def _upstream(node: str, states):
        labels = ["node", "peer", "method", "process"]
        dur = HistogramMetricFamily("idsim_upstream_request_duration_seconds",
                                    "Time of a call to a peer node", labels=labels)
        fail = CounterMetricFamily("idsim_upstream_failures",
                                   "Calls to a peer that got no answer", labels=labels)
        for process, state in states:
            for peer, method, buckets, total, failures in state["upstream"]:
                _histogram(dur, [node, peer, method, process], buckets, total)
                fail.add_metric([node, peer, method, process], failures)
        return [dur, fail]


# -- resilience of the recursive node (issue 11): serve-stale, prefetch, failover ----------
# Read at scrape time from the recursive node's ``stats`` counter (``resolver.recursive``):
# ``stale`` answers served, ``stale_deadline`` of them on the client deadline (the rest on
# a failure), ``prefetches`` started, ``failover_node`` / ``failover_top`` answers from a
# mirror / a standby top-level node. Labels: reason (failure, deadline) and to (mirror,
# standby_top), two values each.

def resilience_rows(node) -> list[tuple[str, str, int]]:
    """``(metric, label value, count)`` of a recursive node; none for other nodes."""
    stats = getattr(node, "stats", None)
    if getattr(node, "health", None) is None or stats is None:
        return []
    deadline = stats["stale_deadline"]
    return [("stale", "failure", stats["stale"] - deadline), ("stale", "deadline", deadline),
            ("prefetch", "", stats["prefetches"]),
            ("failover", "mirror", stats["failover_node"]),
            ("failover", "standby_top", stats["failover_top"])]


def resilience_families(node: str, states) -> list:
    """``idsim_stale_answers_total{reason}``, ``idsim_prefetches_total``,
    ``idsim_failovers_total{to}`` (each with node and process), when any process has them."""
    if not any(state.get("resilience") for _, state in states):
        return []
    stale = CounterMetricFamily("idsim_stale_answers", "Answers served from an expired entry "
                                "(RFC 8767 serve-stale), per reason",
                                labels=["node", "reason", "process"])
    prefetch = CounterMetricFamily("idsim_prefetches", "Cached answers refreshed before "
                                   "expiry because a client asked in their last part",
                                   labels=["node", "process"])
    failover = CounterMetricFamily("idsim_failovers", "Answers from a mirror or a standby "
                                   "top-level node, the primary not answering",
                                   labels=["node", "to", "process"])
    for process, state in states:
        for metric, label, n in state.get("resilience", ()):
            if metric == "prefetch":
                prefetch.add_metric([node, process], n)
            else:
                (stale if metric == "stale" else failover).add_metric([node, label, process], n)
    return [stale, prefetch, failover]


def fault_family(node) -> GaugeMetricFamily:
    """``idsim_fault_active{node,kind}``: 1 while a fault of that kind is set on the node
    (``resolver.fault_inject``; every kind is listed, 0 when inactive)."""
    family = GaugeMetricFamily("idsim_fault_active", "1 while a fault of this kind is set on "
                               "the node (idsim fault)", labels=["node", "kind"])
    faults = getattr(node, "faults", None)
    if faults is not None:
        active = faults.faults_of(node.name)
        for kind in KINDS:
            family.add_metric([node.name, kind], 1 if kind in active else 0)
    return family


class NodeMetrics:
    """One node's metrics: its request counters (fed by ``NodeAPI``), its own registry and
    the ``/metrics`` handler. ``process`` and ``others`` are set by ``metrics_share`` when
    several processes serve the node's port."""

    def __init__(self, node) -> None:
        self.node = node
        self.requests = RequestStats()
        self.process = 0
        self.others = list  # () -> [(process, snapshot)] of the processes sharing the port
        self.version = version()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def page(self, node, request: web.BaseRequest) -> web.Response:
        """``GET /metrics``: the text exposition format 0.0.4, which every Prometheus 2.x
        reads (a ``NodeAPI`` handler)."""
        return web.Response(body=self.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
