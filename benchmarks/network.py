"""An idsim network run as ``python -m topology.host`` processes, laid out for measuring.

The data directory gets what the host processes read (``topology.toml`` from ``tomlio.save``,
``logins.json`` from ``cluster.make_logins``) and, for Locust, the ``cluster.json`` that
``idsim up`` writes. Each host's stderr goes to ``<data>/logs/<label>.log``.
"""
from __future__ import annotations

import json
import queue
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procs
from topology.cluster import Cluster, make_logins
from topology.model import Topology
from topology.ports import find_ports_in_use
from topology.tomlio import save
from topology.presets import get_preset

READY_TIMEOUT = 300.0
PROBLEM = re.compile(r"Traceback|ERROR|Error|Exception|exception|CRITICAL|WARNING|Warning")


def free_preset(name: str, **kw) -> Topology:
    """The preset on a base port whose every HTTP and RPC port is free (below the ephemeral
    range, so wrk's client sockets never take them)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, 28_000, 10)
        topo = get_preset(name, base_port=base, **kw)
        if not find_ports_in_use(topo):
            return topo
    raise RuntimeError("no free port range for an idsim network")


@dataclass
class Host:
    label: str
    nodes: list[str]
    proc: subprocess.Popen
    log: Path
    events: queue.Queue = field(default_factory=queue.Queue)

    @property
    def pid(self) -> int:
        return self.proc.pid


def _pump(host: Host) -> None:
    for line in host.proc.stdout:
        try:
            host.events.put(json.loads(line))
        except ValueError:
            continue
    host.events.put({"event": "exit", "code": host.proc.wait()})


class Network:
    def __init__(self, topo: Topology, data_dir: Path, logins: dict | None = None) -> None:
        self.topo = topo
        self.data = data_dir
        self.hosts: list[Host] = []
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        save(topo, self.data / "topology.toml")
        path = self.data / "logins.json"
        old = logins or (json.loads(path.read_text()) if path.exists() else None)
        self.logins = make_logins(topo, old)
        path.write_text(json.dumps(self.logins, indent=2))
        path.chmod(0o600)

    # ------------------------------------------------------------------ processes
    def spawn(self, label: str, nodes: list[str], *flags: str) -> Host:
        cmd = [sys.executable, "-m", "topology.host", "--topology", str(self.data / "topology.toml"),
               "--data", str(self.data), *flags, *nodes]
        log = self.data / "logs" / f"{label}.log"
        with open(log, "w") as err:
            proc = procs.spawn(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        host = Host(label, nodes, proc, log)
        threading.Thread(target=_pump, args=(host,), daemon=True).start()
        self.hosts.append(host)
        return host

    def wait_ready(self, *hosts: Host, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for host in hosts:
            while True:
                try:
                    ev = host.events.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"{host.label} not ready after {timeout:.0f} s") from None
                if ev["event"] == "ready":
                    break
                if ev["event"] in ("error", "exit"):
                    tail = host.log.read_text(errors="replace")[-2500:]
                    raise RuntimeError(f"host {host.label} failed: {ev}\n{tail}")

    def start(self, label: str, nodes: list[str], *flags: str) -> Host:
        host = self.spawn(label, nodes, *flags)
        self.wait_ready(host)
        return host

    def stop(self) -> None:
        for host in reversed(self.hosts):
            procs.stop(host.proc, timeout=15)
        self.hosts.clear()

    def write_state(self) -> None:
        """``cluster.json`` as ``idsim up`` writes it (Locust reads prefixes and logins there)."""
        cluster = Cluster(self.topo, self.data)
        cluster.procs = [h.proc for h in self.hosts]
        cluster.write_state()

    # ------------------------------------------------------------------ facts
    def http(self, name: str) -> str:
        if name == "recursive":
            return self.topo.recursive.http_url
        if name == "top":
            return self.topo.top.http_url
        return self.topo.secondary(name).address.http_url

    def prefixes(self, node: str | None = None) -> list[str]:
        return [e.prefix for e in self.topo.enterprises if node is None or e.node == node]

    def rss_anon_kib(self) -> dict[str, int | None]:
        return {h.label: procs.rss_anon_kib(h.pid) for h in self.hosts}

    def log_problems(self, limit: int = 20) -> dict[str, list[str]]:
        """Lines of each host's log that look like trouble (tracebacks, errors, warnings)."""
        out = {}
        for log in sorted((self.data / "logs").glob("*.log")):
            lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines()
                     if PROBLEM.search(ln)]
            if lines:
                out[log.stem] = lines[:limit] + ([f"... {len(lines) - limit} more"]
                                                 if len(lines) > limit else [])
        return out
