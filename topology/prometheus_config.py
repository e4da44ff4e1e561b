"""``idsim-data/prometheus.yml``: a Prometheus scrape config covering every node of a topology.

One job per role (``idsim-recursive``, ``idsim-top``, ``idsim-secondary``, ``idsim-mirror``),
each target a node's HTTP address, scraped at ``/metrics``. The series carry their own
``node`` and ``role`` labels (``resolver.metrics``), so the targets add none. Written by
``idsim up`` on each start (``Cluster.prepare``): the ports may have moved. Run Prometheus on
it with ``prometheus --config.file=idsim-data/prometheus.yml``.

Pure text from the topology (``scrape_config``); ``write`` is the one function touching a file.
Strings are written JSON-quoted, which YAML reads as the same strings.
"""
from __future__ import annotations

import json
from pathlib import Path

from resolver.roles import Role
from topology.model import Topology

__all__ = ["scrape_config", "write"]


def _target(http_url: str) -> str:
    return http_url.removeprefix("http://").removeprefix("https://")


def scrape_config(topo: Topology, *, interval: float, ca_file: Path | None = None) -> str:
    """The YAML document: every node of ``topo`` as a target, scraped every ``interval`` s;
    over HTTPS verified with ``ca_file`` (the cluster CA) when the topology uses TLS."""
    scheme = "https" if topo.uses_tls else "http"
    jobs = {Role.RECURSIVE: [r.address.http_url for r in topo.recursives()],
            Role.TOP: [topo.top.http_url],
            Role.SECONDARY: [s.address.http_url for s in topo.secondaries],
            Role.MIRROR: [m.address.http_url for m in topo.mirrors]}  # mirrors, standby tops
    every = f"{max(1, round(interval * 1000))}ms"  # Prometheus durations are whole numbers
    lines = ["# Prometheus scrape config for every idsim node, written by idsim up on each start.",
             "# Use: prometheus --config.file=prometheus.yml (series: idsim_*; sum over 'process')",
             "global:", f"  scrape_interval: {every}", f"  evaluation_interval: {every}",
             "scrape_configs:"]
    for role, urls in jobs.items():
        if not urls:
            continue
        targets = ", ".join(json.dumps(_target(u)) for u in urls)
        lines += [f"  - job_name: {json.dumps(f'idsim-{role}')}",
                  "    metrics_path: /metrics", f"    scheme: {scheme}",
                  "    static_configs:", f"      - targets: [{targets}]"]
        if scheme == "https" and ca_file is not None:
            lines += ["    tls_config:", f"      ca_file: {json.dumps(str(ca_file))}"]
    return "\n".join(lines) + "\n"


def write(topo: Topology, path: Path, *, interval: float, ca_file: Path | None = None) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(scrape_config(topo, interval=interval, ca_file=ca_file), encoding="utf-8")
    tmp.replace(path)
    return path
