"""An idsim network run as ``python -m topology.host`` processes, laid out for measuring.

The data directory gets what the host processes read (``topology.toml`` from ``tomlio.save``,
``logins.json`` from ``cluster.make_logins``) and, for Locust, the ``cluster.json`` that
``idsim up`` writes. The processes are ``topology.supervisor`` host processes (they die with
the benchmark; one that exits is left down, ``OnExit.KEEP``: a measurement must not silently
run against a restarted node). Each host's stderr goes to ``<data>/logs/<label>.log``.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from benchmarks import procs
from resolver.roles import Role
from topology import cluster
from topology.model import Topology
from topology.ports import find_ports_in_use
from topology.tomlio import save
from topology.presets import get_preset
from topology.supervisor import HostProcess, OnExit, Supervisor, host_command

READY_TIMEOUT = 300.0
STOP_TIMEOUT = 15.0
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


class Network:
    def __init__(self, topo: Topology, data_dir: Path, logins: dict | None = None) -> None:
        self.topo = topo
        self.data = data_dir
        self.data.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor(self.data / "logs", on_exit=OnExit.KEEP, say=procs.log)
        save(topo, self.data / "topology.toml")
        path = self.data / "logins.json"
        old = logins or (json.loads(path.read_text()) if path.exists() else None)
        self.logins = cluster.make_logins(topo, old)
        path.write_text(json.dumps(self.logins, indent=2))
        path.chmod(0o600)

    # ------------------------------------------------------------------ processes
    @property
    def hosts(self) -> list[HostProcess]:
        return self.supervisor.children

    def spawn(self, label: str, nodes: list[str], *flags: str) -> HostProcess:
        cmd = host_command(self.data / "topology.toml", self.data, nodes, *flags)
        return self.supervisor.spawn(label, cmd, nodes)

    def wait_ready(self, *hosts: HostProcess, timeout: float = READY_TIMEOUT) -> None:
        self.supervisor.wait_ready(*hosts, timeout=timeout)

    def start(self, label: str, nodes: list[str], *flags: str) -> HostProcess:
        host = self.spawn(label, nodes, *flags)
        self.wait_ready(host)
        return host

    def stop(self) -> None:
        self.supervisor.stop(STOP_TIMEOUT)

    def write_state(self) -> None:
        """``cluster.json`` as ``idsim up`` writes it (Locust reads prefixes and logins there)."""
        cluster.write_state(self.data, self.topo, self.hosts)

    # ------------------------------------------------------------------ facts
    def http(self, name: str) -> str:
        if name == Role.RECURSIVE:
            return self.topo.recursive.http_url
        if name == Role.TOP:
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
