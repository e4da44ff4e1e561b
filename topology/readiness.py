"""Readiness across a topology: what each node's ``/readyz`` checks, and the launcher's wait on
every node's ``/readyz``.

``attach`` is the wiring's last step (``topology.wiring.start_nodes``): once the named nodes
have seeded and joined the network it gives each a ``resolver.health.Readiness`` with its
role's checks (recursive: the top-level node answers RPC; secondary: the top-level node holds
its enterprise prefixes; top: its store is open; mirror: it has copied its primary's dump and
follows it, ``replica_following``), and gives each recursive node the network's
addresses for its dashboard (``resolver.dashboard``: every recursive node and the top-level
node with their cities, then the secondary nodes the top-level node lists). Before
``attach`` a node's /readyz answers 503 "starting".

``wait_ready`` polls URLs' ``/readyz`` until each answers 200, within a deadline, and says
which did not and why otherwise. Every interval and timeout comes from ``Config``.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Iterable

from resolver import health
from resolver.clock import Clock
from resolver.config import Config
from resolver.roles import Role


def attach(running, topo, config: Config, clock: Clock, *, standalone: bool = False,
           ssl_context=None) -> None:
    """Give each node of ``running`` its ``Readiness`` (and a recursive node its dashboard)."""
    from resolver.dashboard import Dashboard
    obs = config.observe
    national = topo.secondaries[0].code.split(".")[0] if topo.secondaries else "88"
    for name, node in running.nodes.items():
        checks: dict[str, health.Check] = {}
        if node.role == Role.TOP:
            checks["store"] = health.store_open(node.store)
        elif node.role == Role.MIRROR:  # issue 11: a mirror or a standby top-level node
            checks["primary"] = replica_following(node)
        elif standalone:
            pass  # no network to depend on
        elif node.role == Role.RECURSIVE:
            probe = topo.secondaries[0].code if topo.secondaries else national
            checks["top"] = health.rpc_answers(node.top, "delegate", probe)
            node.dashboard = Dashboard(topo.top.http_url, topo.address_of(name).http_url,
                                       config, clock, ssl_context=ssl_context,
                                       core=core_nodes(topo))
        else:
            prefixes = [e.prefix for e in topo.enterprises_of(name)] or [name]
            checks["top"] = health.prefixes_registered(
                topo.top.http_url, prefixes, chunk=config.batch.max_resolve,
                timeout=obs.peer_timeout, recheck=obs.registration_recheck, clock=clock,
                ssl_context=ssl_context)
        node.readiness = health.Readiness(checks, ttl=obs.peer_check_ttl,
                                          timeout=obs.peer_timeout, clock=clock)


def replica_following(mirror) -> health.Check:
    """A mirror is ready once it has copied its primary's dump and follows its log
    (``resolver.mirror.MirrorNode.ready``); the detail says how far behind it is."""
    async def check() -> str:
        if not getattr(mirror, "ready", False):
            raise health.NotReady("copying its primary's dump (not following yet)")
        return f"following its primary, {mirror.lag_seconds():.3f} s behind"
    return check


def core_nodes(topo) -> list:
    """The recursive nodes and the top-level node as the dashboard lists them, with cities;
    then the mirrors (issue 11: they send no reports, so the top-level node's rows lack
    them), role ``mirror``, titled by what they follow."""
    from resolver.watch import NodeInfo
    return [*(NodeInfo(r.name, Role.RECURSIVE.value, r.address.http_url, r.place.city)
              for r in topo.recursives()),
            NodeInfo("top", Role.TOP.value, topo.top.http_url, topo.top_place.city),
            *(NodeInfo(m.name, Role.MIRROR.value, m.address.http_url, m.place.city,
                       title="standby top-level node" if m.primary == Role.TOP.value
                       else f"mirror of {m.primary}") for m in topo.mirrors)]


def probe(url: str, timeout: float, ssl_context=None) -> tuple[bool, str]:
    """``GET <url>/readyz``: (ready, why not); https verified with ``ssl_context``."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout,
                                    context=ssl_context) as resp:
            return resp.status == 200, ""
    except urllib.error.HTTPError as exc:
        try:
            return False, json.loads(exc.read()).get("message", f"HTTP {exc.code}")
        except ValueError:
            return False, f"HTTP {exc.code}"
    except OSError as exc:
        return False, f"no answer ({type(exc).__name__})"


def wait_ready(urls: Iterable[str], config: Config, timeout: float, ssl_context=None) -> None:
    """Block until every URL's /readyz answers 200; RuntimeError naming those that did not
    (and their last reason) after ``timeout`` seconds."""
    waiting = dict.fromkeys(urls, "not asked yet")
    deadline = time.monotonic() + timeout
    while True:
        for url in list(waiting):
            ok, why = probe(url, config.observe.scrape_timeout, ssl_context)
            if ok:
                del waiting[url]
            else:
                waiting[url] = why
        if not waiting:
            return
        if time.monotonic() >= deadline:
            shown = "\n  ".join(f"{u}: {w}" for u, w in list(waiting.items())[:10])
            raise RuntimeError(f"{len(waiting)} node(s) not ready after {timeout:.0f} s:\n  "
                               + shown)
        time.sleep(config.observe.ready_poll)
