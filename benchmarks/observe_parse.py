#!/usr/bin/env python
"""Reading a /metrics exposition: ``python benchmarks/observe_parse.py [--nodes 34]``.

The recursive node serving the dashboard reads the /metrics of every host process each
second or two (in a thread beside its event loop). A host process of
``idsim up --workers 2`` holds the top-level node and 33 secondary nodes, so one exposition
names 34 nodes x every op x 17 histogram series. This builds such an exposition with
prometheus_client and times ``resolver.observe.parse`` (its line scanner) against the
reference measured in the same rounds: prometheus_client's own text parser over the same
text, reduced to the same figures. Medians and the ratio are printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,  # noqa: E402
                               generate_latest)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from resolver import observe  # noqa: E402

OPS = ["resolve", "register", "delete", "list", "batch_resolve", "batch_register", "admin",
       "stats", "redirect", "other"]
BUCKETS = [0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
           0.5, 1, 2, 4, 8]


def exposition(nodes: int) -> str:
    reg = CollectorRegistry()
    req = Counter("idsim_requests_total", "", ["node", "role", "op", "process"], registry=reg)
    dur = Histogram("idsim_request_duration_seconds", "", ["node", "role", "op", "process"],
                    registry=reg, buckets=BUCKETS)
    rec = Gauge("idsim_records", "", ["node", "process"], registry=reg)
    for n in range(nodes):
        name = "top" if n == 0 else f"88.{100 + n}"
        for op in OPS:
            req.labels(name, "secondary", op, "0").inc(n + 1)
            dur.labels(name, "secondary", op, "0").observe(0.001 * (n % 7 + 1))
        rec.labels(name, "0").set(1000 + n)
    return generate_latest(reg).decode()


def reference(text: str) -> dict[str, float]:
    """The requests per node, through prometheus_client's parser (what observe.parse sums)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "idsim_requests_total" and s.labels.get("op") in observe.WORK_OPS:
                out[s.labels["node"]] = out.get(s.labels["node"], 0.0) + s.value
    return out


def timed(fn, text: str) -> float:
    t = time.perf_counter()
    fn(text)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=34)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    text = exposition(args.nodes)
    ours = {n: s.requests for n, s in observe.parse(text).items()}
    assert ours == reference(text), "the two readings differ"
    scan, ref = [], []
    for _ in range(args.rounds):  # interleaved, so both see the same load on the box
        scan.append(timed(observe.parse, text))
        ref.append(timed(reference, text))
    a, b = statistics.median(scan), statistics.median(ref)
    print(f"exposition: {args.nodes} nodes, {len(text.splitlines()):,} lines, "
          f"{len(text) / 1024:,.0f} KiB")
    print(f"observe.parse (line scanner)      {a * 1000:8.1f} ms  (median of {args.rounds})")
    print(f"prometheus_client parser (ref.)   {b * 1000:8.1f} ms")
    print(f"ratio scanner / reference          {a / b:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
