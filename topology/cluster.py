"""Start a topology as a few host processes on this machine, wait until ready, stop cleanly.

The data directory holds everything a restart needs: ``topology.toml`` (the addresses used),
``logins.json`` (every login: top-level, node admins, enterprises; mode 0600), one LMDB
directory per node, and ``cluster.json`` (what is running where, for ``idsim status``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from resolver import auth
from resolver.config import Config, write_toml
from topology import demo
from topology.model import Topology
from topology.ports import find_ports_in_use
from topology.tomlio import save
from topology.validation import validate

READY_TIMEOUT = 600.0


def make_logins(topo: Topology, old: dict | None = None) -> dict:
    """Logins for every prefix owner, keeping those already made (restarts keep secrets)."""
    old = old or {}

    def login(section: str, prefix: str) -> dict:
        have = old.get(section, {}).get(prefix) if section != "top" else old.get("top")
        return have or {"prefix": prefix, "username": f"{auth.SECRET_INDEX}:0.NA/{prefix}",
                        "secret": auth.new_secret()}
    national = topo.secondaries[0].code.split(".")[0] if topo.secondaries else "88"
    return {
        "top": login("top", national),
        "nodes": {s.code: login("nodes", s.code) for s in topo.secondaries},
        "enterprises": {e.prefix: dict(login("enterprises", e.prefix), node=e.node,
                                       httpUrl=topo.secondary(e.node).address.http_url)
                        for e in topo.enterprises},
    }


def plan_workers(topo: Topology, workers: int, recursive_processes: int = 1) -> list[list[str]]:
    """Which nodes each process runs: the recursive and top-level nodes together, the
    secondary nodes spread over the other processes (all in one when ``workers`` is 1); then
    ``recursive_processes - 1`` more processes serving the recursive node's port alone."""
    codes = [s.code for s in topo.secondaries]
    if workers <= 1:
        plan = [["top", "recursive", *codes]]
    else:
        plan = [["top", "recursive"]] + [[] for _ in range(workers - 1)]
        for i, code in enumerate(codes):
            plan[1 + i % (workers - 1)].append(code)
    return [p for p in plan if p] + [["recursive"] for _ in range(recursive_processes - 1)]


def examples(topo: Topology, n: int = 5) -> list[str]:
    """A few identifiers that the demo data holds, from different nodes."""
    out, seen = [], set()
    for ent in topo.enterprises:
        if ent.node not in seen and topo.identifiers_per_enterprise:
            seen.add(ent.node)
            out.append(f"{ent.prefix}/{demo.suffix(0)}")
        if len(out) == n:
            break
    return out


@dataclass
class Cluster:
    topology: Topology
    data_dir: Path
    workers: int = max(1, os.cpu_count() or 1)
    store: str = "lmdb"
    recursive_processes: int = 1
    config: Config = field(default_factory=Config)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def state_path(self) -> Path:
        return self.data_dir / "cluster.json"

    def prepare(self) -> dict:
        validate(self.topology)
        busy = find_ports_in_use(self.topology)
        if busy:
            raise RuntimeError("ports in use (another idsim up? use --port or idsim down):\n  "
                               + "\n  ".join(busy[:10]))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        save(self.topology, self.data_dir / "topology.toml")
        write_toml(self.config, self.data_dir / "config.toml")
        path = self.data_dir / "logins.json"
        old = json.loads(path.read_text()) if path.exists() else None
        logins = make_logins(self.topology, old)
        path.write_text(json.dumps(logins, indent=2))
        path.chmod(0o600)
        return logins

    def start(self, on_event: Callable[[dict], None] | None = None) -> None:
        """Spawn the host processes and block until every one says ready (or one fails)."""
        self.prepare()
        events: list[dict] = []
        cond = threading.Condition()
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        for i, nodes in enumerate(plan_workers(self.topology, self.workers,
                                               self.recursive_processes)):
            cmd = [sys.executable, "-m", "topology.host", "--topology",
                   str(self.data_dir / "topology.toml"), "--data", str(self.data_dir),
                   "--store", self.store, "--config", str(self.data_dir / "config.toml")]
            if self.recursive_processes > 1 and "recursive" in nodes:
                cmd.append("--reuse-port")
            with open(logs / f"host-{i}.log", "w") as log:
                proc = subprocess.Popen(cmd + nodes, stdout=subprocess.PIPE, stderr=log,
                                        text=True, start_new_session=True)
            self.procs.append(proc)
            threading.Thread(target=_pump, args=(proc, events, cond, logs / f"host-{i}.log"),
                             daemon=True).start()
        ready, deadline = 0, time.monotonic() + READY_TIMEOUT
        seen = 0
        try:
            while ready < len(self.procs):
                with cond:
                    cond.wait_for(lambda: len(events) > seen, timeout=1.0)
                    new, seen = events[seen:], len(events)
                for ev in new:
                    if ev["event"] == "ready":
                        ready += 1
                    elif ev["event"] in ("error", "exit"):
                        raise RuntimeError(f"a host process failed: {ev.get('message', '')}"
                                           f"\n{ev.get('stderr', '')}")
                    if on_event:
                        on_event(ev)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster not ready after {READY_TIMEOUT:.0f} s")
        except BaseException:
            self.stop()
            raise
        self.write_state()

    def write_state(self) -> None:
        topo = self.topology
        nodes = [{"name": "recursive", "role": "recursive", "industry": "",
                  "httpUrl": topo.recursive.http_url, "rpc": topo.recursive.rpc_addr},
                 {"name": "top", "role": "top", "industry": "",
                  "httpUrl": topo.top.http_url, "rpc": topo.top.rpc_addr}]
        nodes += [{"name": s.code, "role": "secondary", "industry": s.industry, "city": s.city,
                   "title": s.name, "httpUrl": s.address.http_url, "rpc": s.address.rpc_addr}
                  for s in topo.secondaries]
        state = {"topology": topo.name, "pids": [p.pid for p in self.procs],
                 "launcher": os.getpid(), "nodes": nodes, "examples": examples(topo),
                 "logins": str((self.data_dir / "logins.json").resolve()),
                 "recursiveUrl": topo.recursive.http_url, "topUrl": topo.top.http_url,
                 "perEnterprise": topo.identifiers_per_enterprise,
                 "prefixes": [e.prefix for e in topo.enterprises]}
        self.state_path.write_text(json.dumps(state, indent=2))

    def stop(self, timeout: float = 15.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self.state_path.unlink(missing_ok=True)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)


def _pump(proc: subprocess.Popen, events: list, cond: threading.Condition, log: Path) -> None:
    """Collect a host process's JSON event lines; on exit, add an ``exit`` event with its log."""
    for line in proc.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        with cond:
            events.append(ev)
            cond.notify_all()
    proc.wait()
    err = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    with cond:
        events.append({"event": "exit", "code": proc.returncode,
                       "message": f"exit code {proc.returncode}", "stderr": err})
        cond.notify_all()
