"""A ``idsim up --preset mini --mirrors`` cluster driven from outside, for
``benchmarks/resilience.py`` and ``tests/test_resilience_e2e.py``: the launcher (started in its
own session, stopped with Ctrl-C then by process group), ``idsim fault kill`` of a node's host
process, the recursive node's failover counters, and plain HTTP helpers that never raise
(a status is an HTTP code or the exception's name).

``--workers 4`` puts the top-level node and 88.118 (``VICTIM``) each alone in a host process,
so killing one loses nothing else; mirrors run in processes of their own. Every wait polls a
condition up to a deadline.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import procs
from benchmarks.network import free_preset
from topology import demo

REPO = Path(__file__).resolve().parent.parent
VICTIM = "88.118"          # the secondary node killed (alone in its host process)
READY_TIMEOUT = 120.0
CLIENT_TIMEOUT = 10.0


def get(url: str, timeout: float = CLIENT_TIMEOUT) -> tuple[object, dict]:
    """(HTTP status or the exception's name, JSON body or {})."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError) as exc:
        return type(exc).__name__, {}


def put(url: str, body: dict, authorization: str) -> object:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT", headers={
        "Content-Type": "application/json", "Authorization": authorization})
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return type(exc).__name__


class Up:
    """One ``idsim up --preset mini --mirrors`` launcher and its ``cluster.json``."""

    def __init__(self, data: Path, on_exit: str, demo_n: int, answer_ttl: int,
                 delegation_ttl: int) -> None:
        self.data = data
        port = free_preset("mini").recursive.http_port
        sets = [f"cache.max_ttl={answer_ttl}", f"cache.site_ttl={delegation_ttl}",
                f"cache.prefix_record_ttl={delegation_ttl}",
                f"cache.delegation_ttl={delegation_ttl}"]
        self.cmd = [sys.executable, "-m", "topology.cli", "up", "--preset", "mini", "--mirrors",
                    "--workers", "4", "--port", str(port), "--data", str(data), "--demo",
                    str(demo_n), "--on-exit", on_exit, *[a for s in sets for a in ("--set", s)]]
        self.log = open(data.parent / f"up-{data.name}.log", "w")
        self.proc = procs.spawn(self.cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.state = self.wait_ready()
        self.nodes = {n["name"]: n for n in self.state["nodes"]}
        self.rec = self.state["recursiveUrl"]

    def wait_ready(self) -> dict:
        path, deadline = self.data / "cluster.json", time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"idsim up exited {self.proc.returncode}: {self.output()}")
            state = json.loads(path.read_text()) if path.exists() else {}
            if state.get("launcher") == self.proc.pid:
                return state
            time.sleep(0.2)
        raise RuntimeError(f"idsim up not ready in {READY_TIMEOUT:.0f} s: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        procs.stop(self.proc)
        self.log.close()

    def fault(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "topology.cli", "fault", *args, "--data",
                               str(self.data)], cwd=REPO, capture_output=True, text=True,
                              timeout=90, env=dict(os.environ, PYTHONPATH=str(REPO)))

    def pid_of(self, node: str) -> int:
        state = json.loads((self.data / "cluster.json").read_text())
        return next(p["pid"] for p in state["processes"] if node in p["nodes"])

    def kill(self, node: str) -> int:
        """SIGKILL the host process of ``node`` (``idsim fault kill``), wait until it is gone.
        A process still waiting for its restart (the supervisor's back-off) is waited for."""
        deadline = time.monotonic() + 30
        while not alive(pid := self.pid_of(node)) and time.monotonic() < deadline:
            time.sleep(0.05)
        run = self.fault("kill", node)
        if run.returncode != 0:
            raise RuntimeError(f"idsim fault kill {node}: {run.stdout}{run.stderr}")
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pid

    def wait_back(self, node: str, old_pid: int, probe: str, timeout: float = 60) -> None:
        """Until cluster.json records a new pid for ``node`` and ``probe`` (a URL) answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid_of(node) != old_pid and get(probe, 2)[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{node} not back within {timeout:.0f} s: {self.output()}")

    def mirror_of(self, node: str) -> dict:
        return next(n for n in self.nodes.values() if n.get("primary") == node)

    def prefixes(self, node: str | None = None) -> list[str]:
        return [p for p in self.state["prefixes"] if node is None or p.startswith(node + ".")]

    def failovers(self, to: str, at_least: float = 0.0, timeout: float = 10.0) -> float:
        """The recursive node's ``idsim_failovers_total{to=...}``, summed over processes.
        A scrape has the other processes' counts as of their last snapshot
        (``metrics.share_every``): with ``at_least``, scrapes again until the sum reaches it
        or ``timeout`` passes, and answers the last sum."""
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"{self.rec}/metrics", timeout=CLIENT_TIMEOUT) as resp:
                text = resp.read().decode()
            found = sum(s.value for f in text_string_to_metric_families(text)
                        for s in f.samples if s.name == "idsim_failovers_total"
                        and s.labels.get("to") == to)
            if found >= at_least or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)  # polling other processes' snapshots, up to the deadline


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def ids(prefixes: list[str], first: int, last: int) -> list[str]:
    return [f"{p}/{demo.suffix(i)}" for p in prefixes for i in range(first, last)]


def resolves(up: Up, handles: list[str], workers: int = 4) -> int:
    """How many of ``handles`` resolve (200, the right handle) through the recursive node."""
    def one(h: str) -> bool:
        status, body = get(f"{up.rec}/api/handles/{h}")
        return status == 200 and body.get("handle") == h
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, handles))
