"""The one wiring: config + topology + node names -> running nodes and their servers.

``start_nodes`` is the only place nodes are built and served. ``idsim node`` (a topology of
one secondary node, ``standalone``), the host processes of ``idsim up`` (and so the
benchmarks, which run those) and the test fixtures all call it. For each name (``top``,
``recursive``, ``recursive-<city>``, a secondary node's code or a mirror's ``<primary>~<city>``)
it opens the store, builds the node from the config, seeds demo data, serves HTTP (HTTPS for
``https`` addresses, ``topology.pki``) and msgpack-RPC on the topology's addresses, registers
the enterprise prefixes with the top-level node and starts the statistics reports.

Mirrors (issue 11, ``topology.mirrors``): a mirror is the node its primary is, on its own
store, neither bootstrapped nor seeded, wrapped read-only by ``resolver.mirror.MirrorNode``,
which copies the primary's dump and then follows it; it registers no prefixes and sends no
reports. The top-level node learns each secondary node's mirrors (``Site.mirrors``, its
HS_SITE values); recursive nodes learn the standby top-level nodes (``standby_tops``).

Invariants: every default comes from ``config`` (nothing here has a number of its own but
the retry interval of the start-up registration); every time read or wait goes through
``clock``; a failure while starting closes whatever had started; with ``[wan] enabled`` every
RPC client a node makes carries the WAN link from that node to its peer (``resolver.link``).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from aiohttp import web

from resolver import errors, metrics_share, server
from resolver.clock import SYSTEM, Clock
from resolver.config import Config
from resolver.net import split_address
from resolver.nodes import SecondaryNode
from resolver.population import Member, Population
from resolver.templates import template_of
from resolver.recursive import RecursiveNode
from resolver.resolution import Site
from resolver.roles import Role
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_auth import Keyring, Trust, role_of
from resolver.store import open_store
from resolver.top import TopNode
from resolver.web import NodeAPI
from topology import mirrors, pki
from topology import readiness
from topology.model import Topology
from topology.seeding import seed_node
from topology.wan_presets import build_links

log = logging.getLogger("idsim.wiring")
REGISTER_RETRY = 0.2  # s between attempts to reach a top-level node that is still starting


@dataclass
class Running:
    """Nodes started by ``start_nodes`` and everything serving them; ``close`` stops all."""

    nodes: dict[str, object] = field(default_factory=dict)
    runners: list[web.BaseRunner] = field(default_factory=list)
    rpc_servers: list[RpcServer] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    clients: list[RpcClient] = field(default_factory=list)
    links: object = None  # resolver.link.Links when [wan] enabled (faults set .blocked)
    # node name -> its resolver.metrics_share.Sharing, when several processes serve it
    sharing: dict[str, metrics_share.Sharing] = field(default_factory=dict)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()
        for rpc in self.rpc_servers:
            await rpc.close()
        for runner in self.runners:
            await runner.cleanup()
        for node in self.nodes.values():  # stores close last: nothing is writing any more
            await node.close()


def store_url(kind: str, data_dir: Path, name: str) -> str:
    """``memory:`` or the node's LMDB directory under ``data_dir`` (map size from config)."""
    if kind.startswith("redis-cluster://"):  # s4: a namespace per node in the shared cluster
        from resolver.store.redis_cluster import for_node
        return for_node(kind, name)
    return "memory:" if kind == "memory" else f"lmdb:{data_dir / name}"


def site_for(topo: Topology, code: str) -> Site:
    """The site a secondary node of the topology serves its prefixes from."""
    node = topo.secondary(code)
    return Site(code, node.address.http_url, node.address.rpc_addr,
                mirrors.sites(topo, code))  # its mirrors, in HS_SITE order


def national_prefix(topo: Topology) -> str:
    return topo.secondaries[0].code.split(".")[0] if topo.secondaries else "88"


async def _build(topo: Topology, name: str, config: Config, *, data_dir: Path, logins: dict,
                 store: str, clock: Clock, progress, case_sensitive: bool,
                 tls: pki.NodeTls | None, keyring: Keyring | None,
                 links=None) -> tuple[object, object]:
    """One node, ready to serve, and the address it serves on."""
    if name == Role.TOP:
        node = TopNode("top", open_store(store_url(store, data_dir, "top"), config.store,
                                          config.replication),
                       national_prefix(topo), config, clock=clock, case_sensitive=case_sensitive)
        await node.bootstrap(logins["top"]["secret"])
        for s in topo.secondaries:
            await node.add_node(s.code, site_for(topo, s.code), logins["nodes"][s.code]["secret"],
                                {"name": s.name, "industry": s.industry, "city": s.city})
        return node, topo.top
    if role_of(name) == Role.RECURSIVE:  # recursive, recursive-<city> (several: issue 10)
        trust = Trust(name, keyring) if keyring else None
        standby = [m.address.rpc_addr for m in mirrors.standby_tops(topo)]  # issue 11
        return (RecursiveNode(name, topo.top.rpc_addr, config, clock=clock,
                              case_sensitive=case_sensitive, trust=trust,
                              client_ssl=tls.client if tls else None,
                              links=links and links.for_node(name),
                              **({"standby_tops": standby} if standby else {})),
                topo.address_of(name))
    if role_of(name) == Role.MIRROR:  # <primary>~<city> (issue 11)
        return (await _build_mirror(topo, name, config, data_dir=data_dir, store=store,
                                    clock=clock, case_sensitive=case_sensitive,
                                    keyring=keyring, links=links), topo.address_of(name))
    spec = topo.secondary(name)
    node = SecondaryNode(spec.code, open_store(store_url(store, data_dir, spec.code),
                                               config.store, config.replication), [spec.code], config, clock=clock,
                         case_sensitive=case_sensitive,
                         **population_of(topo, spec.code, case_sensitive))
    await node.bootstrap(logins["nodes"][spec.code]["secret"])
    await seed_node(node, topo, logins,  # demo records only in "demo" mode
                    topo.identifiers_per_enterprise if topo.population == "demo" else 0,
                    progress)
    return node, spec.address


async def _build_mirror(topo: Topology, name: str, config: Config, *, data_dir: Path,
                        store: str, clock: Clock, case_sensitive: bool,
                        keyring: Keyring | None, links=None) -> object:
    """A mirror, started: the node its primary is (same prefixes, population and templates)
    on the mirror's own store, wrapped read-only (``resolver.mirror.MirrorNode``)."""
    from resolver.mirror import MirrorNode  # lazily: only a topology with mirrors needs it
    m = mirrors.spec(topo, name)
    own = open_store(store_url(store, data_dir, name), config.store, config.replication)
    if m.primary == Role.TOP:  # a standby top-level node
        node = TopNode(str(Role.TOP), own, national_prefix(topo), config, clock=clock,
                       case_sensitive=case_sensitive)
    else:
        node = SecondaryNode(m.primary, own, [m.primary], config, clock=clock,
                             case_sensitive=case_sensitive,
                             **population_of(topo, m.primary, case_sensitive))
    primary = mirrors.primary_address(topo, m)
    try:
        mirror = MirrorNode(name, node, primary.rpc_addr, primary.http_url, config, clock=clock,
                            trust=Trust(name, keyring) if keyring else None,
                            link=links.between(name, m.primary) if links is not None else None)
    except BaseException:
        await node.close()
        raise
    try:
        await mirror.start()  # dump, then follow, in the background
    except BaseException:
        await mirror.close()  # closes the node it wraps
        raise
    return mirror


def population_of(topo: Topology, code: str, case_sensitive: bool) -> dict:
    """A secondary node's synthetic population ("full" mode) and templates."""
    templates = topo.templates_by_industry()
    members = [Member(e.prefix, e.identifiers, template_of(templates, e.industry))
               for e in topo.enterprises_of(code)] if topo.population == "full" else []
    return {"population": Population(members, topo.seed, case_sensitive=case_sensitive) or None,
            "templates": templates}


async def start_nodes(topo: Topology, names: list[str], config: Config, *, data_dir: Path,
                      logins: dict, store: str = "lmdb", clock: Clock = SYSTEM,
                      reuse_port: bool = False, standalone: bool = False,
                      case_sensitive: bool = False,
                      progress: Callable[[str, int], None] | None = None,
                      access_log: Callable[[str], object] | None = None,
                      faults=None) -> Running:
    """Start the named nodes of ``topo``. ``logins`` holds every secret (``cluster.make_logins``),
    the nodes' RPC keys too: every RPC server and client of a node proves it is that node.

    ``reuse_port``: several processes serve these nodes' ports (``SO_REUSEPORT``; a recursive
    node's each with its own cache); they build a node one at a time (``one_at_a_time``).
    ``standalone``: no top-level node to register with or report to, and no RPC port
    (``idsim node``). ``case_sensitive``: keys
    keep ASCII case (Handle.Net's ``case_sensitive`` server option; default folded).
    ``access_log``: node name -> its ``resolver.access_log.AccessLog`` (None: no access log).
    ``faults``: a ``resolver.fault_inject.Injector`` every node is attached to (None: none).
    """
    running = Running()
    tls = pki.node_tls(data_dir) if topo.uses_tls else None  # https addresses: <data>/pki
    keyring = None if standalone else Keyring.from_logins(logins)
    running.links = None if standalone else build_links(config, topo, clock)  # [wan] enabled
    try:
        for name in names:
            async with one_at_a_time(data_dir, name, reuse_port and store != "memory"):
                node, addr = await _build(topo, name, config, data_dir=data_dir,
                                          logins=logins, store=store, clock=clock,
                                          progress=progress, case_sensitive=case_sensitive,
                                          tls=tls, keyring=keyring, links=running.links)
            running.nodes[name] = node
            # reuse_port: several processes serve this node's ports (SO_REUSEPORT), HTTP and
            # RPC alike (long-lived RPC connections spread over them); they share metrics,
            # counts and the top-level node's reports (resolver.metrics_share)
            api = NodeAPI(node)
            running.runners.append(await server.serve(
                api, addr.host, addr.http_port, config.http, reuse_port=reuse_port,
                ssl_context=tls.server if tls and addr.scheme == "https" else None,
                access_log=access_log and access_log(name)))
            if reuse_port:
                sharing, task = metrics_share.start(api.metrics, data_dir / "metrics",
                                                    config.metrics, clock, node=node)
                running.sharing[name] = sharing
                running.tasks.append(task)
                if node.role != Role.RECURSIVE:  # its processes report as one (@pid: apart)
                    node.report_stats = sharing.report_stats
            if not standalone:
                rpc = RpcServer(node.rpc_handlers(), config.rpc, clock=clock,
                                trust=Trust(node.name, keyring))
                running.rpc_servers.append(await rpc.start(addr.host, addr.rpc_port,
                                                           reuse_port=reuse_port))
            if faults is not None:  # w3: faults set while running (resolver.fault_inject)
                faults.attach(name, node, api, running.runners[-1],
                              None if standalone else running.rpc_servers[-1])
        if not standalone:
            await _join_network(running, topo, config, keyring, clock)
        readiness.attach(running, topo, config, clock, standalone=standalone,  # /readyz
                         ssl_context=tls.client if tls else None)
    except BaseException:
        await running.close()
        raise
    return running


@contextlib.asynccontextmanager
async def one_at_a_time(data_dir: Path, name: str, on: bool):
    """With ``on``, hold ``<data>/locks/<name>.lock`` (``flock``): processes sharing a node's
    ports open, bootstrap and seed it in turn, the first doing the work, the others finding it
    done (two creating one prefix at once would refuse the second)."""
    if not on:
        yield
        return
    (data_dir / "locks").mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _join_network(running: Running, topo: Topology, config: Config, keyring: Keyring,
                        clock: Clock) -> None:
    """Register prefixes with the top-level node, announce new ones, start the reports. Each
    node talks to the top-level node on its own connection, as itself (``rpc_auth``)."""
    rpc = dataclasses.replace(config.rpc, timeout=config.host.top_timeout)
    tops: dict[str, RpcClient] = {}
    for name, node in running.nodes.items():
        if node.role not in (Role.TOP, Role.MIRROR):  # mirrors neither register nor report
            tops[name] = RpcClient(*split_address(topo.top.rpc_addr), rpc, clock=clock,
                                   trust=Trust(node.name, keyring))
            if running.links is not None:
                tops[name].link = running.links.between(name, "top")
            running.clients.append(tops[name])
    await register_with_top(running, topo, tops, config, clock)
    for name, node in running.nodes.items():
        if node.role == Role.SECONDARY:
            node.announce = partial(announce, tops[name], site_for(topo, name))
    running.tasks.append(asyncio.get_running_loop().create_task(
        report_loop(running, tops, config.host.report_every, clock)))


async def register_with_top(running: Running, topo: Topology, tops: dict[str, RpcClient],
                            config: Config, clock: Clock) -> None:
    """Each secondary registers its enterprise prefixes at the top-level node, retrying while
    the top-level node starts, up to ``config.host.register_deadline``."""
    deadline = clock() + config.host.register_deadline
    for name, node in running.nodes.items():
        if node.role != Role.SECONDARY:
            continue
        prefixes = [e.prefix for e in topo.enterprises_of(name)]
        while True:
            try:
                await announce(tops[name], site_for(topo, name), *prefixes)
                break
            except errors.PeerUnavailable:
                if clock() > deadline:
                    raise
                await clock.sleep(REGISTER_RETRY)


async def announce(top: RpcClient, site: Site, *prefixes: str) -> None:
    """Register prefixes served at ``site`` with the top-level node (HS_SITE records); the
    connection ``top`` authenticated as the node serving them."""
    await top.call("register_prefixes", list(prefixes),
                   [site.prefix, site.http_url, site.rpc_addr])


async def report_loop(running: Running, tops: dict[str, RpcClient], every: float,
                      clock: Clock) -> None:
    """Every ``every`` seconds, each node's counters to the top-level node (best effort)."""
    tag = f"@{os.getpid()}"  # several processes may each run a recursive node
    while True:
        for name, node in running.nodes.items():
            if node.role == Role.TOP:
                node.report("top", {"role": Role.TOP.value,
                                    "resolutions": node.stats["resolutions"]})
                continue
            if node.role == Role.MIRROR:  # a copy: its primary reports
                continue
            try:
                tops[name].notify("report", name + tag if node.role == Role.RECURSIVE else name,
                                  node.report_stats())
            except Exception:  # reports are best effort; the node keeps serving
                log.debug("report from %s failed", name, exc_info=True)
        await clock.sleep(every)
