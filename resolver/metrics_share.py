"""Metrics of a node served by several processes on one port (``SO_REUSEPORT``).

A scrape of the shared port reaches one of the processes, chosen by the kernel. So that every
scrape still answers every process's series, each process:
* claims a small stable index (the ``process`` label): the lowest ``i`` whose lock file
  ``<dir>/<node>-<i>.lock`` it can ``flock``; the lock is held for the life of the process,
  so a restarted process takes the index its predecessor left (its counters then restart
  from 0, which Prometheus reads as a counter reset);
* writes a snapshot of its counters (``resolver.metrics.snapshot``) to ``<node>-<i>.json``
  every ``metrics.share_every`` seconds (atomically: a temporary file, then ``os.replace``);
* on a scrape, adds the other processes' snapshots to its own live series. A snapshot older
  than ``STALE_AFTER`` intervals is of a process that is gone and is left out.

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


class Sharing:
    """One process's side of the exchange for one node (see the module doc)."""

    def __init__(self, metrics: NodeMetrics, directory: Path, config: MetricsConfig,
                 clock: Clock) -> None:
        self.metrics = metrics
        self.dir = Path(directory)
        self.every = config.share_every
        self.clock = clock
        self.name = metrics.node.name
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
            self._lock_fd = fd
            self.metrics.process = i
            self.metrics.others = self.others
            return i
        raise RuntimeError(f"more than {MAX_PROCESSES} processes serve {self.name}")

    def write(self) -> None:
        path = self.dir / f"{self.name}-{self.metrics.process}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"time": self.clock(), "state": snapshot(
            self.metrics.node, self.metrics.requests)}))
        os.replace(tmp, path)

    def others(self) -> list[tuple[str, dict]]:
        """``(process, snapshot)`` of every other live process serving this node."""
        now, out = self.clock(), []
        for path in sorted(self.dir.glob(f"{self.name}-*.json")):
            index = path.stem.rpartition("-")[2]
            if not index.isdigit() or int(index) == self.metrics.process:
                continue
            try:
                doc = json.loads(path.read_text())
                if now - doc["time"] <= STALE_AFTER * self.every:
                    out.append((index, doc["state"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    async def run(self) -> None:
        while True:
            try:
                self.write()
            except OSError as exc:  # best effort: the own series stay live regardless
                log.warning("metrics snapshot of %s not written: %s", self.name, exc)
            await self.clock.sleep(self.every)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def start(metrics: NodeMetrics, directory: Path, config: MetricsConfig,
          clock: Clock) -> asyncio.Task:
    """Claim an index for ``metrics``'s process and exchange snapshots until cancelled."""
    sharing = Sharing(metrics, directory, config, clock)
    sharing.claim()

    async def run() -> None:
        try:
            await sharing.run()
        finally:
            sharing.close()
    return asyncio.get_running_loop().create_task(run())
