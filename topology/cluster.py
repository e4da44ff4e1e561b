"""Start a topology as a few host processes on this machine, wait until ready, stop cleanly.

The data directory holds everything a restart needs: ``topology.toml`` (the addresses used),
``logins.json`` (every login: top-level, node admins, enterprises, and each node's RPC key;
mode 0600; enterprises allocated while running are added by ``topology.logins`` and kept by
restarts), one LMDB directory per node, ``logs/host-<i>.log`` (each host process's log,
``topology.logs``, and the supervisor's notes), with ``access_log``
``logs/access-host-<i>.jsonl`` (one JSON line per request, ``resolver.access_log``), ``pki/``
when the nodes serve HTTPS (the cluster CA, ``topology.pki``) and ``cluster.json`` (what is
running where, for ``idsim status`` and ``down``).

Invariants:
- The processes are ``topology.supervisor`` host processes: they die with the launcher, and
  one that exits is handled by the ``OnExit`` policy while the others keep serving.
- The top-level and the recursive node never share a process (``plan_workers``), nor does a
  mirror with its primary (mirrors run in processes of their own, ``topology.mirrors.plan``).
- ``cluster.json`` is replaced atomically and its pids are current: a restart rewrites it.
  It is removed by ``Cluster.stop`` and ``stop_recorded``; one whose processes are all gone
  is stale (``live_processes`` finds none of them).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import psutil

from resolver import auth
from resolver.config import Config, write_toml
from resolver.ratelimit import per_process
from resolver.roles import Role
from resolver.rpc_auth import new_key
from topology import demo, mirrors, pki, prometheus_config
from topology.model import Topology
from topology import readiness
from topology.ports import find_ports_in_use
from topology.supervisor import HostProcess, OnExit, Supervisor, host_command, terminate
from topology.tomlio import load as load_topology
from topology.tomlio import save
from topology.validation import validate


def make_logins(topo: Topology, old: dict | None = None) -> dict:
    """Logins for every prefix owner and every node's RPC key, keeping those already made
    (restarts keep secrets)."""
    old = old or {}

    def login(section: str, prefix: str) -> dict:
        have = old.get(section, {}).get(prefix) if section != "top" else old.get("top")
        return have or {"prefix": prefix, "username": f"{auth.SECRET_INDEX}:0.NA/{prefix}",
                        "secret": auth.new_secret()}
    national = topo.secondaries[0].code.split(".")[0] if topo.secondaries else "88"
    # each node's own key for node-to-node RPC (resolver.rpc_auth); kept across restarts, and
    # made for a data directory from before there were any
    keys = old.get("rpc") if isinstance(old.get("rpc"), dict) else {}
    names = [str(Role.TOP), *(r.name for r in topo.recursives()),
             *(s.code for s in topo.secondaries),
             *(m.name for m in topo.mirrors)]  # mirrors: <primary>~<city>, Role.MIRROR
    return {
        "rpc": {name: keys.get(name) or new_key() for name in names},
        "top": login("top", national),
        "nodes": {s.code: login("nodes", s.code) for s in topo.secondaries},
        "enterprises": {e.prefix: dict(login("enterprises", e.prefix), node=e.node,
                                       httpUrl=topo.secondary(e.node).address.http_url)
                        for e in topo.enterprises},
    }


def default_processes() -> int:
    """How many processes serve a node by default (``idsim up``, ``idsim node``): one per
    core, at least 1."""
    return max(1, os.cpu_count() or 1)


def plan_workers(topo: Topology, workers: int, recursive_processes: int = 1,
                 node_processes: int = 1) -> list[list[str]]:
    """Which nodes each process runs. The top-level and the recursive node never share a
    process (losing one must not lose both): the recursive node runs alone, the top-level node
    with the secondary nodes when ``workers`` is 2 or less, else alone too, the secondary
    nodes then spread over the other ``workers - 2`` processes. Each of those groups is served
    by ``node_processes`` processes sharing its ports (``SO_REUSEPORT``): the copies follow
    the first round. Then ``recursive_processes - 1`` more processes serving the recursive
    node's ports alone, then each further recursive node (``recursive-<city>``) alone in a
    process of its own, then the mirrors' processes (``topology.mirrors.plan``: never a mirror
    with its primary; one process per mirror, since one follower applies its log)."""
    codes = [s.code for s in topo.secondaries]
    if workers <= 2:
        plan = [[Role.TOP, *codes], [Role.RECURSIVE]]
    else:
        plan = [[Role.TOP], [Role.RECURSIVE]] + [[] for _ in range(workers - 2)]
        for i, code in enumerate(codes):
            plan[2 + i % (workers - 2)].append(code)
    plan = [[str(n) for n in p] for p in plan if p]
    copies = [p for p in plan if p != [str(Role.RECURSIVE)]] * (max(1, node_processes) - 1)
    return (plan + copies
            + [[str(Role.RECURSIVE)] for _ in range(recursive_processes - 1)]
            + [[r.name] for r in topo.more_recursive]
            + mirrors.plan(topo, workers))  # mirrors (issue 11): their own processes


def examples(topo: Topology, n: int = 5) -> list[str]:
    """A few identifiers that the demo data holds, from different nodes."""
    out, seen = [], set()
    for ent in topo.enterprises:
        if ent.node not in seen and (ex := demo.example(topo, ent)):  # by population mode
            seen.add(ent.node)
            out.append(ex)
        if len(out) == n:
            break
    return out


@dataclass
class Cluster:
    """A topology served by host processes under one ``Supervisor``; ``start`` blocks until
    all are ready, ``stop`` stops them and removes ``cluster.json``."""
    topology: Topology
    data_dir: Path
    workers: int = max(1, os.cpu_count() or 1)
    store: str = "lmdb"
    recursive_processes: int = 1
    node_processes: int = 1  # processes serving each other node's ports (SO_REUSEPORT)
    on_exit: OnExit = OnExit.RESTART
    say: Callable[[str], None] | None = None
    config: Config = field(default_factory=Config)
    access_log: bool = False  # each host process writes <data>/logs/access-host-<i>.jsonl
    supervisor: Supervisor | None = field(default=None, init=False)

    @property
    def state_path(self) -> Path:
        return self.data_dir / "cluster.json"

    def prepare(self) -> dict:
        validate(self.topology)
        if self.store == "memory" and self.node_processes > 1:  # each its own memory
            raise ValueError("a memory store is one process's: use node_processes 1 with it")
        busy = find_ports_in_use(self.topology)
        if busy:
            raise RuntimeError("ports in use (another idsim up? use --port or idsim down):\n  "
                               + "\n  ".join(busy[:10]))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        save(self.topology, self.data_dir / "topology.toml")
        write_toml(self.config, self.data_dir / "config.toml")
        prometheus_config.write(self.topology, self.data_dir / "prometheus.yml",
                                interval=self.config.metrics.scrape_interval,
                                ca_file=pki.directory(self.data_dir).ca_cert.resolve())
        path = self.data_dir / "logins.json"
        old = json.loads(path.read_text()) if path.exists() else None
        logins = make_logins(self.topology, old)
        for prefix, login in (old or {}).get("enterprises", {}).items():  # allocated while
            logins["enterprises"].setdefault(prefix, login)  # running (topology.logins)
        path.write_text(json.dumps(logins, indent=2))
        path.chmod(0o600)
        if self.topology.uses_tls:  # the cluster CA and the nodes' certificate, kept or made
            pki.ensure(pki.directory(self.data_dir), {a.host for a in self.topology.addresses()},
                       datetime.now(timezone.utc))
        return logins

    def start(self, on_event: Callable[[dict], None] | None = None) -> None:
        """Spawn the host processes and block until every one says ready (RuntimeError when
        one fails to start; everything started is stopped then). ``on_event`` sees the start's
        events (``seeded``, ``ready``) on the supervisor's reader threads."""
        self.prepare()
        data = self.data_dir.resolve()
        starting = threading.Event()
        starting.set()

        def forward(child: HostProcess, ev: dict) -> None:
            if on_event and starting.is_set():
                on_event(ev)
        self.supervisor = Supervisor(data / "logs", on_exit=self.on_exit, config=self.config.host,
                                     on_event=forward, on_restart=lambda _: self.write_state(),
                                     say=self.say)
        try:
            for i, nodes in enumerate(self.plan()):
                self.supervisor.spawn(f"host-{i}", host_command(
                    data / "topology.toml", data, nodes, *self.host_flags(i, nodes)), nodes)
            self.supervisor.wait_ready(*self.supervisor.children)
            readiness.wait_ready(self.node_urls(), self.config,  # every /readyz 200
                                 self.config.host.ready_timeout,
                                 pki.client_context_for(data))
        except BaseException:
            self.stop()
            raise
        finally:
            starting.clear()
        self.write_state()

    def host_flags(self, i: int, nodes: list[str]) -> list[str]:
        """The flags of host process ``i``, which serves ``nodes``: with other processes
        serving them too, ``--reuse-port`` and each process's share of the login limits
        (``ratelimit.per_process``: each keeps its own failed-login counts)."""
        data = self.data_dir.resolve()
        flags = ["--store", self.store, "--config", str(data / "config.toml")]
        shared = self.processes_of(nodes[0])
        if shared > 1:
            flags.append("--reuse-port")
            for key, value in per_process(self.config.auth, shared).items():
                flags += ["--set", f"auth.{key}={value}"]
        if self.access_log:
            flags += ["--access-log", str(data / "logs" / f"access-host-{i}.jsonl")]
        return flags

    def plan(self) -> list[list[str]]:
        """The nodes of each host process (``plan_workers``)."""
        return plan_workers(self.topology, self.workers, self.recursive_processes,
                            self.node_processes)

    def processes_of(self, name: str) -> int:
        """How many host processes serve ``name``."""
        return sum(name in nodes for nodes in self.plan())

    def node_urls(self) -> list[str]:
        """Every node's HTTP URL (h6: idsim up waits on their /readyz)."""
        return [a.http_url for a in self.topology.addresses()]

    def write_state(self) -> None:
        write_state(self.data_dir, self.topology, self.supervisor.children)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every host process (nothing restarts after this) and remove cluster.json."""
        if self.supervisor is not None:
            self.supervisor.stop(timeout)  # after it returns, no restart rewrites the state
        self.state_path.unlink(missing_ok=True)

    def failed(self) -> bool:
        """A host process exited and the policy (``OnExit.STOP``) says stop everything."""
        return self.supervisor is not None and self.supervisor.failed.is_set()


# ------------------------------------------------------------------ cluster.json

def write_state(data_dir: Path, topo: Topology, children: Sequence[HostProcess]) -> None:
    """``cluster.json``: what runs where (``idsim status``, ``down``, ``register``, Locust).
    Written atomically (a temporary file in the same directory, then ``os.replace``): a
    reader sees the old document or the new one, never part of one."""
    rec = topo.recursives()  # every node with its city (places: issue 10)
    nodes = [{"name": r.name, "role": Role.RECURSIVE, "industry": "", "city": r.place.city,
              "httpUrl": r.address.http_url, "rpc": r.address.rpc_addr} for r in rec[:1]]
    nodes += [{"name": "top", "role": Role.TOP, "industry": "", "city": topo.top_place.city,
               "httpUrl": topo.top.http_url, "rpc": topo.top.rpc_addr}]
    nodes += [{"name": s.code, "role": Role.SECONDARY, "industry": s.industry, "city": s.city,
               "title": s.name, "httpUrl": s.address.http_url, "rpc": s.address.rpc_addr}
              for s in topo.secondaries]
    nodes += [{"name": r.name, "role": Role.RECURSIVE, "industry": "", "city": r.place.city,
               "httpUrl": r.address.http_url, "rpc": r.address.rpc_addr} for r in rec[1:]]
    nodes += [{"name": m.name, "role": Role.MIRROR, "primary": m.primary,  # mirrors, standby top
               "industry": "" if m.primary == Role.TOP else topo.secondary(m.primary).industry,
               "city": m.place.city, "httpUrl": m.address.http_url, "rpc": m.address.rpc_addr}
              for m in topo.mirrors]
    me = psutil.Process()
    state = {"topology": topo.name, "pids": [c.pid for c in children],
             "processes": [{"label": c.label, "pid": c.pid, "nodes": list(c.nodes),
                            "log": str(c.log), "restarts": c.restarts} for c in children],
             "launcher": me.pid, "launcherStarted": me.create_time(),
             "nodes": nodes, "examples": examples(topo),
             "logins": str((data_dir / "logins.json").resolve()),
             "recursiveUrl": topo.recursive.http_url, "topUrl": topo.top.http_url,
             "recursiveUrls": {r.name: r.address.http_url for r in rec},
             "standbyTopUrls": {m.name: m.address.http_url for m in mirrors.standby_tops(topo)},
             "perEnterprise": topo.identifiers_per_enterprise,
             "prefixes": [e.prefix for e in topo.enterprises]}
    if topo.uses_tls:  # what clients verify the nodes' HTTPS with (pyhandle: HTTPS_verify)
        state["caFile"] = str(pki.directory(data_dir).ca_cert.resolve())
    write_json_atomic(data_dir / "cluster.json", state)


def write_json_atomic(path: Path, doc: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def last_port(data_dir: Path) -> int | None:
    """The recursive node's HTTP port the data directory was last started with (its
    ``topology.toml``), or None."""
    path = Path(data_dir) / "topology.toml"
    try:
        return load_topology(path).recursive.http_port if path.is_file() else None
    except (OSError, ValueError):  # unreadable (TopologyError too): the caller's default
        return None


def read_state(data_dir: Path) -> dict | None:
    path = Path(data_dir) / "cluster.json"
    return json.loads(path.read_text()) if path.exists() else None


def live_processes(data_dir: Path, state: dict) -> tuple[psutil.Process | None,
                                                          list[psutil.Process]]:
    """The launcher and the host processes ``state`` records that are alive and still ours:
    the launcher if its start time is the recorded one, a host if its command line runs
    ``topology.host`` on this data directory (pids are reused)."""
    launcher = _alive(state.get("launcher"))
    if launcher is not None and abs(launcher.create_time()
                                    - state.get("launcherStarted", -1.0)) > 0.5:
        launcher = None
    data = str(Path(data_dir).resolve())
    hosts = []
    for pid in state.get("pids", []):
        proc = _alive(pid)
        try:
            if proc is not None and "topology.host" in (cmd := proc.cmdline()) and data in cmd:
                hosts.append(proc)
        except psutil.Error:
            pass
    return launcher, hosts


def running_pids(data_dir: Path, say: Callable[[str], None]) -> list[int]:
    """The pids of a cluster running from ``data_dir`` (its launcher and host processes). A
    ``cluster.json`` whose processes are all gone is stale: it is removed, and ``say`` so."""
    state = read_state(data_dir)
    if state is None:
        return []
    launcher, hosts = live_processes(data_dir, state)
    pids = ([launcher.pid] if launcher else []) + [h.pid for h in hosts]
    if not pids:
        (Path(data_dir) / "cluster.json").unlink(missing_ok=True)
        say(f"removed {Path(data_dir) / 'cluster.json'}: none of its processes is running")
    return pids


def stop_recorded(data_dir: Path, state: dict, timeout: float) -> list[int]:
    """``idsim down``: SIGTERM the launcher (it stops its hosts) and wait for it; then stop
    recorded host processes still running (the launcher may be gone); remove cluster.json.
    Returns the pids that were running."""
    launcher, hosts = live_processes(data_dir, state)
    if launcher is not None:
        terminate([launcher], timeout + 5)
    _, left = live_processes(data_dir, state)
    terminate(left, timeout)
    (Path(data_dir) / "cluster.json").unlink(missing_ok=True)
    return ([launcher.pid] if launcher else []) + [p.pid for p in hosts]


def _alive(pid: int | None) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except (psutil.Error, TypeError, ValueError):
        return None
