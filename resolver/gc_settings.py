"""The garbage collector of a serving process (``[host]`` ``gc_*``), set once at start-up.

A batch registration makes about ten short-lived container objects per identifier; with
Python's default thresholds (700, 10, 10) young collections run every few hundred of them and
full collections walk every object the node built at start-up (its nodes, configs, seeded
caches), so collection took 20-30 % of a batch's CPU. ``apply`` runs after the nodes are built
and seeded: one full collection, then (``gc_freeze``) ``gc.freeze()`` moves every surviving
object to the permanent generation (never scanned again), then ``gc.set_threshold`` with the
configured thresholds. Invariants: cycles are still collected (only less often); nothing here
runs on a request path; a threshold0 of 0 leaves the thresholds as they are.
"""
from __future__ import annotations

import gc

from resolver.config import HostConfig


def apply(host: HostConfig) -> None:
    """Collect once, freeze what start-up left (``gc_freeze``), set the thresholds."""
    gc.collect()
    if host.gc_freeze:
        gc.freeze()
    if host.gc_threshold0 > 0:
        gc.set_threshold(host.gc_threshold0, max(1, host.gc_threshold1),
                         max(1, host.gc_threshold2))
