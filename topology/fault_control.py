"""Setting faults on a running cluster, found from its data directory (``idsim fault``, plans).

``apply(data_dir, spec)``, ``clear(data_dir, node=None)`` and ``active(data_dir)`` talk to the
control API (``topology.control``) of each host process recorded in ``cluster.json``, with
the token in ``<data>/control/token``. A spec is a ``resolver.faults.fault_from`` object,
or ``{"kind": "kill"|"restart", "node": N}``:

A fault is set in every host process running N (``--node-processes`` and
``--recursive-processes`` run a node in several, sharing its ports); a partition also in those
running its peer.

- ``kill``: SIGKILL to every host process running N (a node served by several processes,
  ``--node-processes``, goes down whole; every other node of those processes goes with it).
  ``idsim up``'s supervisor then follows its ``--on-exit``: ``restart`` starts it again after
  its back-off, ``keep`` leaves it down, ``stop`` stops the whole network.
- ``restart``: SIGTERM to those processes (a clean stop) and wait (``[faults] restart_wait``)
  until ``cluster.json`` records new pids for all of them and their control APIs answer; under
  ``--on-exit keep`` or ``stop`` nothing restarts it, which is then an error saying so.

A restarted process starts with no faults. ``FaultControlError`` (a ``UserError``) is a
one-line message for the CLI.
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from resolver.config import Config
from resolver.faults import KINDS, FaultError, fault_from
from topology.cli_client import UserError
from topology.cluster import read_state
from topology.control import control_dir

SIGNALS = {"kill": signal.SIGKILL, "restart": signal.SIGTERM}


class FaultControlError(UserError):
    """A fault that could not be set, cleared or listed (one line)."""


def _state(data_dir: Path) -> dict:
    state = read_state(Path(data_dir))
    if state is None:
        raise FaultControlError(f"no cluster running from {data_dir} (start one: idsim up)")
    return state


def hosts(data_dir: Path) -> list[dict]:
    """``[{"pid", "nodes", "url"}]`` of every recorded host process (url None: no control
    API recorded, e.g. still starting)."""
    out = []
    for proc in _state(data_dir).get("processes", []):
        path = control_dir(data_dir) / f"{proc['pid']}.json"
        url = json.loads(path.read_text())["url"] if path.exists() else None
        out.append({"pid": proc["pid"], "nodes": list(proc["nodes"]), "url": url})
    return out


def _hosts_of(data_dir: Path, node: str) -> list[dict]:
    """Every host process running ``node`` (several: ``--node-processes``,
    ``--recursive-processes``)."""
    found = [host for host in hosts(data_dir) if node in host["nodes"]]
    if found:
        return found
    names = sorted(n for h in hosts(data_dir) for n in h["nodes"])
    raise FaultControlError(f"no node {node!r} in the cluster from {data_dir}: nodes are "
                            f"{', '.join(names)}")


def _call(data_dir: Path, host: dict, method: str, path: str, body: dict | None = None,
          config: Config | None = None) -> dict:
    if host["url"] is None:
        raise FaultControlError(f"host process {host['pid']} ({' '.join(host['nodes'])}) has "
                                "no control API recorded: is it still starting?")
    secret = (control_dir(data_dir) / "token").read_text().strip()
    req = urllib.request.Request(host["url"] + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {secret}",
                                          "Content-Type": "application/json"})
    timeout = (config or Config()).faults.control_timeout
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            why = exc.reason
        raise FaultControlError(f"host process {host['pid']}: {why}") from None
    except (OSError, ValueError) as exc:
        raise FaultControlError(f"host process {host['pid']} at {host['url']}: {exc}") from None


def apply(data_dir: Path, spec: dict, config: Config | None = None) -> dict:
    """Set one fault (see the module docstring); what was done, as JSON."""
    data_dir = Path(data_dir)
    kind, node = spec.get("kind"), spec.get("node")
    if kind in SIGNALS:
        return _signal(data_dir, kind, str(node), config or Config())
    try:
        fault_from(spec, 0.0)  # the user's mistakes before any process is asked
    except FaultError as exc:
        raise FaultControlError(str(exc)) from None
    targets = {h["pid"]: h for h in _hosts_of(data_dir, node)}
    if kind == "partition":  # each side refuses the other's calls
        targets.update({h["pid"]: h for h in _hosts_of(data_dir, spec["peer"])})
    result = {}
    for host in targets.values():
        result = _call(data_dir, host, "POST", "/faults", spec, config)
    return result


def clear(data_dir: Path, node: str | None = None, config: Config | None = None) -> list[dict]:
    """Clear every fault (of ``node`` and partitions touching it) in every host process."""
    data_dir = Path(data_dir)
    if node is not None:
        _hosts_of(data_dir, node)  # an unknown node is a mistake, not "nothing to clear"
    query = "" if node is None else "?" + urllib.parse.urlencode({"node": node})
    gone: dict[tuple, dict] = {}
    for host in hosts(data_dir):
        if host["url"] is not None:
            for f in _call(data_dir, host, "DELETE", "/faults" + query, None, config)["cleared"]:
                gone[(f["kind"], f["node"], f.get("peer", ""))] = f
    return list(gone.values())


def active(data_dir: Path, config: Config | None = None) -> list[dict]:
    """Every active fault of the cluster (a partition across two processes once)."""
    data_dir = Path(data_dir)
    found: dict[tuple, dict] = {}
    for host in hosts(data_dir):
        if host["url"] is not None:
            for f in _call(data_dir, host, "GET", "/faults", None, config)["faults"]:
                found[(f["kind"], f["node"], f.get("peer", ""))] = f
    return sorted(found.values(), key=lambda f: (f["node"], f["kind"], f.get("peer", "")))


def _signal(data_dir: Path, kind: str, node: str, config: Config) -> dict:
    victims = _hosts_of(data_dir, node)  # every process serving the node
    pids = []
    for host in victims:
        try:
            os.kill(host["pid"], SIGNALS[kind])
            pids.append(host["pid"])
        except ProcessLookupError:
            continue
    if not pids:
        raise FaultControlError(f"no host process of {node} is running "
                                f"({', '.join(str(h['pid']) for h in victims)})")
    done = {"kind": kind, "node": node, "pid": pids[0], "pids": pids,
            "nodes": sorted({n for h in victims for n in h["nodes"]})}
    if kind == "kill":
        return done
    deadline = time.monotonic() + config.faults.restart_wait
    while time.monotonic() < deadline:  # bounded poll of other processes' files
        try:
            now = _hosts_of(data_dir, node)
            if (len(now) >= len(pids) and not {h["pid"] for h in now} & set(pids)
                    and all(h["url"] is not None for h in now)):
                for new in now:
                    _call(data_dir, new, "GET", "/faults", None, config)
                return {**done, "newPid": now[0]["pid"], "newPids": [h["pid"] for h in now]}
        except FaultControlError:
            pass
        time.sleep(0.2)
    raise FaultControlError(f"{node}: host process(es) {', '.join(map(str, pids))} stopped but "
                            f"not every one was serving again within "
                            f"{config.faults.restart_wait:.0f} s (does the cluster run "
                            "with --on-exit restart?)")


__all__ = ["apply", "clear", "active", "hosts", "FaultControlError", "KINDS"]
