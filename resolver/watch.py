"""Observing a running network over HTTP: the top-level node's ``/api/stats``, each node's
``/readyz`` and ``/metrics``, turned into one snapshot by ``resolver.observe``'s rules.

``idsim status`` (topology.status_view) and the recursive node's ``/dashboard/data``
(resolver.dashboard) both use ``Watcher``: one way to observe the network.

A snapshot is a JSON-ready dict: ``at``, ``interval`` (seconds since the previous snapshot,
which rates are over; None on the first), ``totals`` (``observe.totals``) and ``nodes``, one
per node in the order given: name, role, city, industry, title, url, up (answered HTTP),
ready (/readyz 200), reason (why not), metrics (whether /metrics answered), rate, p99,
hitRatio, records, identifiers and resolutionRate (a secondary's lookups/s, RPC included:
from the top-level node's reports), faults (kinds of its active faults, from its last
answered /metrics: ``idsim_fault_active``).

Invariants: every timeout comes from ``config.observe``; time from the injected clock; a node
that does not answer is shown down, never an error. Several nodes in one host process share
one /metrics exposition (each series names its node), so a scrape's coverage is learned and
the next snapshot scrapes one URL per process; when a node is then missing, the next scrape
asks every node again.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import aiohttp

from resolver import observe
from resolver.clock import Clock
from resolver.config import Config
from resolver.net import client_session
from resolver.roles import Role


_FAULT = re.compile(r'^idsim_fault_active\{([^}]*)\} 1(?:\.0)?$', re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def faults_in(text: str) -> dict[str, list[str]]:
    """Node -> the kinds of its active faults, from a /metrics exposition."""
    out: dict[str, list[str]] = {}
    for labels in _FAULT.findall(text):
        found = dict(_LABEL.findall(labels))
        if "node" in found and "kind" in found:
            out.setdefault(found["node"], []).append(found["kind"])
    return out


@dataclass(frozen=True)
class NodeInfo:
    name: str
    role: str
    url: str
    city: str = ""
    industry: str = ""
    title: str = ""


def nodes_from_stats(stats: dict, top_url: str, recursive_url: str | None,
                     core: list[NodeInfo] | None = None) -> list[NodeInfo]:
    """The network as the top-level node's /api/stats rows list it (+ top and recursive, or
    ``core``: the recursive nodes and the top-level node with their cities, in its stead)."""
    if core is not None:
        nodes = list(core)
    else:
        nodes = [NodeInfo("recursive", Role.RECURSIVE.value, recursive_url)] if recursive_url \
            else []
        nodes.append(NodeInfo("top", Role.TOP.value, top_url))
    nodes += [NodeInfo(r["node"], Role.SECONDARY.value, r.get("httpUrl", ""), r.get("city", ""),
                       r.get("industry", ""), r.get("name", ""))
              for r in stats.get("nodes", ()) if r.get("httpUrl")]
    return nodes


class Watcher:
    """Successive snapshots of a network; rates are between consecutive snapshots."""

    def __init__(self, config: Config, clock: Clock, *, ssl_context=None) -> None:
        self.config = config.observe
        self.ssl_context = ssl_context  # a --tls cluster's CA (topology.pki)
        self.clock = clock
        self._samples: dict[str, observe.Sample] = {}
        self._stats: dict | None = None
        self._stats_at = 0.0
        self._at: float | None = None
        self._covers: dict[str, frozenset[str]] = {}  # /metrics URL -> nodes it showed
        self._faults: dict[str, list[str]] = {}  # node -> active fault kinds (last scrape)

    async def _get(self, http, url: str) -> tuple[int | None, bytes]:
        try:
            async with http.get(url, headers={"Accept": "application/json"}) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None, b""

    async def _ready(self, http, url: str) -> tuple[bool, bool, str]:
        status, body = await self._get(http, f"{url}/readyz")
        if status is None:
            return False, False, "no answer"
        if status == 200:
            return True, True, ""
        try:
            import orjson
            return True, False, str(orjson.loads(body).get("message", f"HTTP {status}"))
        except ValueError:
            return True, False, f"/readyz answered HTTP {status}"

    def _plan(self, nodes: list[NodeInfo]) -> list[str]:
        urls, covered = [], set()
        for n in nodes:
            if n.name not in covered:
                urls.append(n.url)
                covered |= self._covers.get(n.url, frozenset({n.name}))
        return urls

    async def _metrics(self, http, url: str) -> dict[str, observe.Sample] | None:
        status, body = await self._get(http, f"{url}/metrics")
        if status != 200:
            return None
        text = body.decode("utf-8", "replace")
        try:
            # in a thread: the event loop keeps serving between the GIL's switches
            found = await asyncio.to_thread(observe.parse, text)
        except ValueError:
            return None
        for name in found:
            self._faults[name] = []
        self._faults.update(faults_in(text))
        self._covers[url] = frozenset(found)
        return found

    async def snapshot(self, top_url: str, nodes: list[NodeInfo] | None = None,
                       recursive_url: str | None = None,
                       core: list[NodeInfo] | None = None) -> dict:
        """Observe the network now. ``nodes`` None: the nodes the top-level node lists (with
        ``core`` in place of the top-level and the recursive node, see nodes_from_stats)."""
        timeout = aiohttp.ClientTimeout(total=self.config.scrape_timeout)
        async with client_session(timeout=timeout, ssl_context=self.ssl_context) as http:
            status, body = await self._get(http, f"{top_url}/api/stats")
            stats = None
            if status == 200:
                import orjson
                try:
                    stats = orjson.loads(body)
                except ValueError:
                    stats = None
            if nodes is None:
                nodes = nodes_from_stats(stats or self._stats or {}, top_url, recursive_url,
                                         core)
            urls = self._plan(nodes)
            readies, scrapes = await asyncio.gather(
                asyncio.gather(*(self._ready(http, n.url) for n in nodes)),
                asyncio.gather(*(self._metrics(http, u) for u in urls)))
        now = self.clock()
        samples: dict[str, observe.Sample] = {}
        for url, found in zip(urls, scrapes):
            if found is not None:
                for name, smp in found.items():
                    samples.setdefault(name, smp)
        if any(n.name not in samples and n.url not in urls for n in nodes):
            self._covers.clear()  # a node left its process's exposition: ask every node
        dt = None if self._at is None else now - self._at
        rows = {r["node"]: r for r in (stats or {}).get("nodes", ())}
        lookups = observe.node_resolutions(self._stats, stats, now - self._stats_at)
        out = []
        for n, (up, ready, reason) in zip(nodes, readies):
            seen = observe.view(self._samples.get(n.name), samples.get(n.name), dt or 0.0)
            out.append({"name": n.name, "role": n.role, "city": n.city, "industry": n.industry,
                        "title": n.title, "url": n.url, "up": up, "ready": ready,
                        "reason": reason, "metrics": n.name in samples, **seen.doc(),
                        "identifiers": rows.get(n.name, {}).get("identifiers"),
                        "resolutionRate": lookups.get(n.name),
                        "faults": self._faults.get(n.name, [])})  # w3: idsim fault
        totals = observe.totals(self._stats, stats, now - self._stats_at)
        doc = {"at": now, "interval": dt, "totals": totals, "nodes": out,
               "statsAnswered": stats is not None}
        self._samples.update(samples)
        if stats is not None:
            self._stats, self._stats_at = stats, now
        self._at = now
        return doc
