"""What the processes serving one node on one port (``SO_REUSEPORT``) share: metrics, counts.

A scrape of the shared port reaches one of the processes, chosen by the kernel; so does an
RPC connection. So that every scrape still answers every process's series, every report to
the top-level node counts every process, and every top-level process knows every report,
each process:
* claims a small stable index (the ``process`` label): the lowest ``i`` whose lock file
  ``<dir>/<node>-<i>.lock`` it can ``flock``; the lock is held for the life of the process,
  so a restarted process takes the index its predecessor left (its counters then restart
  from 0, which Prometheus reads as a counter reset);
* writes ``<node>-<i>.json`` every ``metrics.share_every`` seconds (atomically: a temporary
  file, then ``os.replace``): a snapshot of its request counters (``resolver.metrics.
  snapshot``; with metrics on), its node's own counts (``COUNTS``) and, for the top-level
  node, the reports it received (``TopNode.reports``);
* on a scrape, adds the other processes' snapshots to its own live series (``others``); in
  ``/api/stats`` and a report, adds their counts to its own, since the earliest of them
  started (``report_stats``), so each process reports the whole node and whichever report the
  top-level node kept last is right (idempotent);
* takes in the reports another top-level process received that are newer than its own
  (``merge_reports``), so ``/api/stats`` answers the same whichever process serves it.
A file older than ``STALE_AFTER`` intervals is of a process that is gone and is left out.

Invariants: a process never reads its own file (its own series are live); a missing,
partial or unreadable file of another process is skipped, never an error of the scrape; time
comes from the clock given.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from pathlib import Path

from resolver.clock import Clock
from resolver.config import MetricsConfig
from resolver.metrics import NodeMetrics, snapshot

log = logging.getLogger("idsim.metrics")
STALE_AFTER = 3  # snapshot intervals after which a process's snapshot is left out
MAX_PROCESSES = 64  # indexes tried when claiming one
COUNTS = ("resolutions", "registrations")  # a node's own counters (node.stats), summed


class Sharing:
    """One process's side of the exchange for one node (see the module doc). ``metrics``
    None (metrics off): counts and reports only, from ``node``."""

    def __init__(self, metrics: NodeMetrics | None, directory: Path, config: MetricsConfig,
                 clock: Clock, *, node=None) -> None:
        self.metrics = metrics
        self.node = node if node is not None else metrics.node
        self.dir = Path(directory)
        self.every = config.share_every
        self.clock = clock
        self.name = self.node.name
        self.index: int | None = None
        self._lock_fd: int | None = None

    def claim(self) -> int:
        """Take the lowest free index and make it this process's ``process`` label."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for i in range(MAX_PROCESSES):
            fd = os.open(self.dir / f"{self.name}-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd, self.index = fd, i
            if self.metrics is not None:
                self.metrics.process = i
                self.metrics.others = self.others
            return i
        raise RuntimeError(f"more than {MAX_PROCESSES} processes serve {self.name}")

    def write(self) -> None:
        doc = {"time": self.clock(), "counts": own_counts(self.node)}
        if isinstance(getattr(self.node, "since", None), str):
            doc["since"] = self.node.since
        if self.metrics is not None:
            doc["state"] = snapshot(self.node, self.metrics.requests)
        reports = getattr(self.node, "reports", None)  # the top-level node's
        if isinstance(reports, dict):
            doc["reports"] = {code: [stats, at] for code, (stats, at) in reports.items()}
        path = self.dir / f"{self.name}-{self.index}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)

    def _docs(self) -> list[tuple[str, dict]]:
        """``(index, document)`` of every other live process serving this node."""
        now, out = self.clock(), []
        for path in sorted(self.dir.glob(f"{self.name}-*.json")):
            index = path.stem.rpartition("-")[2]
            if not index.isdigit() or int(index) == self.index:
                continue
            try:
                doc = json.loads(path.read_text())
                if isinstance(doc, dict) and now - doc["time"] <= STALE_AFTER * self.every:
                    out.append((index, doc))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def others(self) -> list[tuple[str, dict]]:
        """``(process, snapshot)`` of every other live process serving this node."""
        return [(i, doc["state"]) for i, doc in self._docs() if isinstance(doc.get("state"), dict)]

    def counts(self) -> dict[str, int]:
        """This node's ``COUNTS`` summed over every live process serving it."""
        total = own_counts(self.node)
        for _, doc in self._docs():
            got = doc.get("counts")
            for key in COUNTS:
                value = got.get(key) if isinstance(got, dict) else None
                if type(value) is int and value >= 0:
                    total[key] += value
        return total

    def since(self) -> str | None:
        """When the earliest live process serving this node started (its counts count from
        there): ``node.since`` of them all, the earliest (ISO 8601 UTC texts sort by time)."""
        mine = getattr(self.node, "since", None)
        theirs = [doc["since"] for _, doc in self._docs() if isinstance(doc.get("since"), str)]
        return min([mine] + theirs) if isinstance(mine, str) else None

    def report_stats(self) -> dict:
        """``node.report_stats()`` of the whole node: every process's counts, since the
        earliest one started (what ``/api/stats`` answers and the report says)."""
        stats = type(self.node).report_stats(self.node)
        stats.update(self.counts())
        if (since := self.since()) is not None:
            stats["since"] = since
        return stats

    def merge_reports(self) -> int:
        """Take in the reports other top-level processes hold that are newer than this one's
        (never more recursive ones than it would keep itself); how many were taken."""
        reports = getattr(self.node, "reports", None)
        if not isinstance(reports, dict):
            return 0
        from resolver.top import is_recursive_code  # top imports the node modules
        limit = self.node.config.rpc.max_recursive_reports
        taken = 0
        for _, doc in self._docs():
            theirs = doc.get("reports")
            for code, entry in (theirs.items() if isinstance(theirs, dict) else ()):
                if not (isinstance(entry, list) and len(entry) == 2
                        and isinstance(entry[0], dict) and isinstance(entry[1], (int, float))):
                    continue
                mine = reports.get(code)
                if mine is not None and mine[1] >= entry[1]:
                    continue
                recursive = is_recursive_code(code)
                if mine is None and recursive and sum(map(is_recursive_code, reports)) >= limit:
                    continue  # full of recursive processes' reports
                if not (recursive or code == "top" or code in self.node.nodes_info):
                    continue  # not a node this top-level node knows
                reports[code] = (entry[0], entry[1])
                taken += 1
        return taken

    async def run(self) -> None:
        while True:
            try:
                self.merge_reports()
                self.write()
            except OSError as exc:  # best effort: the own series stay live regardless
                log.warning("metrics snapshot of %s not written: %s", self.name, exc)
            await self.clock.sleep(self.every)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def own_counts(node) -> dict[str, int]:
    """This process's ``COUNTS`` of ``node`` (0 for a node without them)."""
    stats = getattr(node, "stats", None) or {}
    return {key: int(stats.get(key, 0)) for key in COUNTS}


def start(metrics: NodeMetrics | None, directory: Path, config: MetricsConfig,
          clock: Clock, *, node=None) -> tuple[Sharing, asyncio.Task]:
    """Claim an index for this process of the node and exchange until the task is cancelled."""
    sharing = Sharing(metrics, directory, config, clock, node=node)
    sharing.claim()

    async def run() -> None:
        try:
            await sharing.run()
        finally:
            sharing.close()
    return sharing, asyncio.get_running_loop().create_task(run())
