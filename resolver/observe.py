"""*Pure*: what an operator sees of a node, from two scrapes of its ``/metrics`` and the time
between them; the network's totals from two ``/api/stats`` documents of the top-level node.

Used by ``idsim status`` and the dashboard alike (``resolver.watch`` does the I/O). Metric
names are the contract's (``resolver.metrics``): ``idsim_requests_total{node,role,op}``,
``idsim_request_duration_seconds{node,role,op}`` (histogram), ``idsim_cache_requests_total``
and ``idsim_cache_hits_total{node,cache}``, ``idsim_records{node}``,
``idsim_replication_lag_seconds{node}`` (a mirror's, issue 11); every series may carry a
``process`` label, summed over (``idsim_records`` and the lag: the largest, each process
reports the same store).

Invariants:
* requests/s and p99 count the Handle API's work (``WORK_OPS``), not /api/stats, /metrics,
  /readyz or dashboard polls, so watching a node does not make it look busy;
* a rate is the increase of a counter over ``dt``; a counter that went down (the process
  restarted) counts from zero, as Prometheus's ``rate`` does;
* p99 interpolates linearly inside the bucket holding the rank, as Prometheus's
  ``histogram_quantile`` does; a rank in the ``+Inf`` bucket gives the largest finite bound;
* the hit ratio is of the answer cache (``cache="answer"``); nodes without it have none;
* anything unknown (no previous scrape, no requests in the interval, no such series) is None.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

WORK_OPS = frozenset({"resolve", "register", "delete", "list", "batch_resolve",
                      "batch_register", "admin", "redirect"})
HIT_CACHE = "answer"
P99 = 0.99


@dataclass
class Sample:
    """One node's counters in one scrape (summed over work ops and processes)."""
    requests: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    cache_requests: float | None = None
    cache_hits: float | None = None
    records: float | None = None
    lag: float | None = None  # a mirror's replication lag, seconds (the largest of its processes)


@dataclass(frozen=True)
class View:
    """One node as shown: requests/s, p99 seconds, answer-cache hit ratio, records, and a
    mirror's replication lag (seconds)."""
    rate: float | None = None
    p99: float | None = None
    hit_ratio: float | None = None
    records: float | None = None
    lag: float | None = None

    def doc(self) -> dict:
        return {"rate": self.rate, "p99": self.p99, "hitRatio": self.hit_ratio,
                "records": self.records, "lag": self.lag}


def _add(a: float | None, b: float) -> float:
    return b if a is None else a + b


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_WANTED = ("idsim_requests_total{", "idsim_request_duration_seconds_bucket{",
           "idsim_cache_requests_total{", "idsim_cache_hits_total{", "idsim_records{",
           "idsim_replication_lag_seconds{")


def samples(text: str):
    """The exposition's samples this module reads: ``(name, labels, value)``.

    A line scanner for the Prometheus text format's sample lines, reading only the names
    above. prometheus_client's parser is ~7x slower on a 34-node process's exposition
    (``benchmarks/observe_parse.py``: 160 ms against 21 ms on a busy 2-core box), time the
    recursive node serving the dashboard would take from resolves; a test checks both
    readings agree. ValueError if a wanted line is malformed.
    """
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        brace = line.index("{")
        close = line.rindex("}")
        labels = dict(_LABEL.findall(line, brace + 1, close))
        parts = line[close + 1:].split()
        if not parts:
            raise ValueError(f"no value in {line[:80]!r}")
        yield line[:brace], labels, float(parts[0])


def parse(text: str) -> dict[str, Sample]:
    """A ``/metrics`` exposition -> {node name: Sample}. ValueError if it does not parse."""
    out: dict[str, Sample] = {}
    for name, labels, value in samples(text):
        node = labels.get("node")
        if node is None:
            continue
        if name == "idsim_requests_total":
            if labels.get("op") in WORK_OPS:
                out.setdefault(node, Sample()).requests += value
        elif name == "idsim_request_duration_seconds_bucket":
            if labels.get("op") in WORK_OPS and "le" in labels:
                b = out.setdefault(node, Sample()).buckets
                le = float(labels["le"])
                b[le] = b.get(le, 0.0) + value
        elif name == "idsim_cache_requests_total" and labels.get("cache") == HIT_CACHE:
            smp = out.setdefault(node, Sample())
            smp.cache_requests = _add(smp.cache_requests, value)
        elif name == "idsim_cache_hits_total" and labels.get("cache") == HIT_CACHE:
            smp = out.setdefault(node, Sample())
            smp.cache_hits = _add(smp.cache_hits, value)
        elif name == "idsim_records":
            smp = out.setdefault(node, Sample())
            smp.records = value if smp.records is None else max(smp.records, value)
        elif name == "idsim_replication_lag_seconds":  # a mirror's (issue 11)
            smp = out.setdefault(node, Sample())
            smp.lag = value if smp.lag is None else max(smp.lag, value)
    return out


def increase(prev: float | None, cur: float | None) -> float | None:
    """How much a counter grew; a counter that went down restarted from zero."""
    if cur is None or prev is None:
        return None
    return cur if cur < prev else cur - prev


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile(q, ...)`` over cumulative ``{le: count}`` (with ``+Inf``)."""
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0 or not math.isinf(ordered[-1][0]):
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None


def bucket_increase(prev: dict[float, float], cur: dict[float, float]) -> dict[float, float]:
    """Per-bucket increase; when any bucket went down (a restart), the current counts."""
    if any(cur.get(le, 0.0) < n for le, n in prev.items()):
        return dict(cur)
    return {le: n - prev.get(le, 0.0) for le, n in cur.items()}


def view(prev: Sample | None, cur: Sample | None, dt: float) -> View:
    """A node between two scrapes ``dt`` seconds apart (``prev`` None: only the gauges)."""
    if cur is None:
        return View()
    if prev is None or dt <= 0:
        return View(records=cur.records, lag=cur.lag)
    grew = increase(prev.requests, cur.requests)
    hits = increase(prev.cache_hits, cur.cache_hits)
    asked = increase(prev.cache_requests, cur.cache_requests)
    return View(rate=grew / dt,
                p99=quantile(P99, bucket_increase(prev.buckets, cur.buckets)),
                hit_ratio=hits / asked if hits is not None and asked else None,
                records=cur.records, lag=cur.lag)


# ------------------------------------------------------------------ network totals

def totals(prev: dict | None, cur: dict | None, dt: float) -> dict:
    """The top-level node's ``/api/stats`` totals -> enterprises, identifiers and the rates of
    resolutions (every node's, recursive included) and registrations; None where unknown."""
    t = (cur or {}).get("totals") or {}
    out = {"enterprises": t.get("enterprises"), "identifiers": t.get("identifiers"),
           "secondaryNodes": t.get("secondaryNodes"), "resolutionsPerSecond": None,
           "registrationsPerSecond": None}
    p = (prev or {}).get("totals") or {}
    if not p or not t or dt <= 0:
        return out

    def resolutions(d: dict) -> float:
        return float(d.get("resolutions", 0)) + float(d.get("recursiveResolutions", 0))
    out["resolutionsPerSecond"] = increase(resolutions(p), resolutions(t)) / dt
    out["registrationsPerSecond"] = increase(float(p.get("registrations", 0)),
                                             float(t.get("registrations", 0))) / dt
    return out


def node_resolutions(prev: dict | None, cur: dict | None, dt: float) -> dict[str, float]:
    """Resolutions/s of each secondary node, from the rows of two /api/stats documents: every
    lookup it answered, over RPC (the recursive node's questions) as over HTTP, which its
    ``idsim_requests_total`` (HTTP only) does not see."""
    if not prev or not cur or dt <= 0:
        return {}
    before = {r.get("node"): r for r in prev.get("nodes", ())}
    out = {}
    for row in cur.get("nodes", ()):
        old = before.get(row.get("node"))
        if old is not None:
            grew = increase(float(old.get("resolutions", 0)), float(row.get("resolutions", 0)))
            out[row["node"]] = grew / dt
    return out
