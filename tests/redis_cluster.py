"""A real local Redis Cluster for tests and benchmarks: three masters, no replicas.

Each master is Debian's ``redis-server`` (installed with ``benchmarks.tools.ensure`` when
missing) in its own directory, on 127.0.0.1, with its client port and its cluster bus port
(``cluster-port``) both picked by ``benchmarks.procs.free_port`` (below 32768). Every master
runs with AOF and ``appendfsync always``: a write is in the master's fsynced append-only file
before the client gets its reply, so an acknowledged write survives a SIGKILL of every server
(``kill`` then ``start`` again from the same directories, which keep ``nodes.conf``).

Waiting is deadline-bounded polling of the processes (``cluster info`` says ``ok``), never a
fixed sleep. The servers are stopped by their own process groups (``benchmarks.procs``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks import procs, tools

READY_TIMEOUT = 60.0  # s for the cluster to say cluster_state:ok (create or restart)


def binaries() -> tuple[str, str]:
    """redis-server and redis-cli, installing Debian's redis-server package if needed
    (RuntimeError with the reason when that is impossible)."""
    server = tools.ensure("redis-server", ["redis-server"])
    cli = tools.ensure("redis-cli", ["redis-tools", "redis-server"])
    return server, cli


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(procs.free_port(20000, 32000))
    return sorted(ports)


class LocalRedisCluster:
    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = Path(root)
        self.server, self.cli = binaries()
        ports = _free_ports(2 * masters)
        self.ports, self.bus_ports = ports[:masters], ports[masters:]
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _dir(self, port: int) -> Path:
        return self.root / f"redis-{port}"

    def _spawn(self) -> None:
        self.procs = []
        for port, bus in zip(self.ports, self.bus_ports):
            d = self._dir(port)
            d.mkdir(parents=True, exist_ok=True)
            self.procs.append(procs.spawn(
                [self.server, "--port", str(port), "--cluster-port", str(bus),
                 "--bind", "127.0.0.1", "--dir", str(d), "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                 "--daemonize", "no", "--logfile", str(d / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port, proc in zip(self.ports, self.procs):
            procs.wait_port(port, 20, proc)

    def _cli(self, *args: str, port: int | None = None, timeout: float = 30) -> str:
        cmd = [self.cli] + (["-p", str(port)] if port else []) + list(args)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            states = [self._cli("cluster", "info", port=p) for p in self.ports]
            if all("cluster_state:ok" in s for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster not ok after {READY_TIMEOUT:.0f} s")
            time.sleep(0.1)  # polling the servers, bounded by the deadline

    def create(self) -> "LocalRedisCluster":
        """Start fresh servers and join them into one cluster covering all 16384 slots."""
        self._spawn()
        self._cli("--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                  "--cluster-replicas", "0", "--cluster-yes", timeout=60)
        self._wait_ok()
        return self

    def start(self) -> None:
        """Start the servers again from their directories (AOF and nodes.conf kept)."""
        self._spawn()
        self._wait_ok()

    def kill(self) -> None:
        """SIGKILL every server: no shutdown, no final save; as if the machine lost power
        for the processes (the page cache is the kernel's, so see README: fsync is what counts)."""
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
            procs.forget(proc)
        self.procs = []

    def stop(self) -> None:
        for proc in self.procs:
            procs.stop(proc)
        self.procs = []
