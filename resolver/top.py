"""The national top-level node: where every prefix is served, and the statistics of the network.

It holds ``0.NA/<prefix>`` records, as Handle's Global Handle Registry does: an HS_SITE value
says which node serves the prefix (its HTTP and msgpack-RPC interfaces), HS_ADMIN who may
change it. Secondary nodes register their enterprise prefixes here (over RPC, authenticated
as the node they are: only prefixes under their own code, at their own site) and report
counts (their own only; ``check_stats`` bounds what a report may hold).

Invariants: it stores and serves only ``0.NA/<prefix>`` records (any other handle is 301);
a prefix is served by the longest registered prefix above it that has an HS_SITE value; the
HS_SITE values it writes carry ``config.cache.site_ttl``. A prefix served by a node with mirrors
has one HS_SITE per site, as Handle.Net's mirror sites: the primary's (``primaryMask``
primary true, at index 1 when free) and one per mirror (primary false), in the order of
``Site.mirrors``; ``delegate`` returns the Site with those mirrors, and enterprise prefixes a
node registers get its mirrors too (``nodes_info[code]["mirrors"]``). Writes follow the secondary node's
rules (``resolver.authority``), through the same ``_store``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any
from urllib.parse import urlsplit

from resolver import errors, identifiers, records
from resolver.authority import ADMIN_GROUP_INDEX, prefix_record
from resolver.clock import SYSTEM, Clock
from resolver.config import Config, RpcConfig
from resolver.identifiers import Handle
from resolver.net import split_address
from resolver.nodes import SCAN_CHUNK, STATS_NOTES, SecondaryNode
from resolver.records import Value
from resolver.resolution import Site
from resolver.roles import Role
from resolver.rpc_auth import Caller, Method, text_param

# Protocol data, not tunables: where HS_SITE sits in a 0.NA/<prefix> record and the name of
# the msgpack-RPC interface in it are what every node reads back (parse_site).
SITE_INDEX = 1
RPC_PROTOCOL = "MSGPACK-RPC"
SCHEME_ATTRIBUTE = "httpScheme"  # site attribute "https" when the HTTP interface serves TLS


def site_value(site: Site, *, ttl: int, now: int = 0, primary: bool = True) -> Value:
    """An HS_SITE value in Handle.Net's JSON shape, with an HTTP and a msgpack-RPC interface
    (``primary`` False: a mirror site)."""
    http = urlsplit(site.http_url)
    host, rpc_port = split_address(site.rpc_addr)
    server = {"serverId": 1, "address": http.hostname,
              "interfaces": [{"query": True, "admin": True, "protocol": "HTTP", "port": http.port},
                             {"query": True, "admin": False, "protocol": RPC_PROTOCOL,
                              "port": rpc_port, "address": host}]}
    return Value(SITE_INDEX, "HS_SITE", {"version": 1, "protocolVersion": "2.10",
                                         "serialNumber": 1, "primaryMask": {"primary": primary},
                                         "attributes": [{"name": "desc", "value": site.prefix},
                                                        *_scheme_attribute(http.scheme)],
                                         "servers": [server]},
                 "site", ttl=ttl, timestamp=now)


def parse_site(prefix: str, value: Any) -> Site:
    server = value["servers"][0]
    by_proto = {i["protocol"]: i for i in server["interfaces"]}
    http = by_proto["HTTP"]
    rpc = by_proto[RPC_PROTOCOL]
    host = server["address"]
    rpc_host = rpc.get("address", host)
    scheme = next((a.get("value") for a in value.get("attributes", ())
                   if a.get("name") == SCHEME_ATTRIBUTE), "http")
    return Site(prefix, f"{scheme}://{host}:{http['port']}", f"{rpc_host}:{rpc['port']}")


def site_values(site: Site, kept: list[Value], *, ttl: int, now: int) -> list[Value]:
    """``kept`` (values without HS_SITE) plus an HS_SITE for the primary and one per mirror."""
    out = list(kept)
    for http_url, rpc_addr, primary in [(site.http_url, site.rpc_addr, True),
                                        *((h, r, False) for h, r in site.mirrors)]:
        value = site_value(Site(site.prefix, http_url, rpc_addr), ttl=ttl, now=now,
                           primary=primary)
        out.append(dataclasses.replace(value, index=_free_index(out, SITE_INDEX)))
    return out


def site_of(prefix: str, values: list[Value]) -> Site | None:
    """The Site a record's HS_SITE values give: the primary site (the first, by index, whose
    primaryMask says primary) with every other as a mirror; None without HS_SITE."""
    sites = sorted((v for v in values if v.type == "HS_SITE"), key=lambda v: v.index)
    if not sites:
        return None
    main = next((v for v in sites if v.value.get("primaryMask", {}).get("primary", True)),
                sites[0])
    primary = parse_site(prefix, main.value)
    mirrors = tuple((m.http_url, m.rpc_addr) for m in (parse_site(prefix, v.value)
                                                       for v in sites if v is not main))
    return dataclasses.replace(primary, mirrors=mirrors)


def _scheme_attribute(scheme: str) -> list[dict]:
    """An HTTPS interface is told by a site attribute (Handle's HS_SITE has no HTTPS protocol
    name); plain HTTP sites carry none, as before."""
    return [{"name": SCHEME_ATTRIBUTE, "value": scheme}] if scheme == "https" else []


class TopNode(SecondaryNode):
    role = Role.TOP

    def __init__(self, name: str, store, national: str = "88", config: Config | None = None, *,
                 nodes_info=None, clock: Clock = SYSTEM, case_sensitive: bool = False) -> None:
        super().__init__(name, store, [national], config, case_sensitive=case_sensitive,
                         clock=clock)
        self.nodes_info: dict[str, dict] = dict(nodes_info or {})  # code → name, industry, city
        self.reports: dict[str, tuple[dict, float]] = {}

    def check_homed(self, handle: Handle) -> None:
        if not handle.is_prefix_handle:
            raise errors.HandleError(errors.SERVER_NOT_RESP,
                                     "That prefix doesn't live here: the top-level node holds "
                                     "only 0.NA/<prefix> records; ask a recursive node",
                                     handle=handle.text)
        super().check_homed(handle)

    # ------------------------------------------------------------------ delegation
    def delegate(self, prefix: str) -> tuple[Site, int]:
        """The site serving ``prefix``: the longest registered prefix above it with HS_SITE."""
        segs = prefix.split(".")
        for n in range(len(segs), 0, -1):
            anc = ".".join(segs[:n])
            values = self.values_of(f"{identifiers.NA_PREFIX}/{anc}") or []
            if (site := site_of(anc, values)) is not None:
                return site, min(v.ttl for v in values if v.type == "HS_SITE")
        raise errors.HandleError(errors.HANDLE_NOT_FOUND,
                                 f"prefix {prefix} is not registered at the top-level node",
                                 handle=prefix)

    async def add_node(self, code: str, site: Site, secret: str, info: dict | None = None) -> None:
        """Register a secondary node (its prefix, site and login); idempotent across restarts."""
        handle = self.parse(f"{identifiers.NA_PREFIX}/{code}")
        now = int(self.clock())
        current = self.values_of(handle.text)
        if current is None:
            values = prefix_record(handle.text, secret, now=now, token=True)
        elif site_of(code, current) == site:
            values = None  # as it was: keep the record (and the login it holds)
        else:  # the node moved (another --port) or its mirrors changed: same login
            values = [v for v in current if v.type != "HS_SITE"]
        if values is not None:
            values = site_values(site, values, ttl=self.config.cache.site_ttl, now=now)
            await self._store([(handle.key, records.encode(handle.text, values))])
        self.nodes_info[code] = dict(info or {}, http_url=site.http_url, rpc_addr=site.rpc_addr,
                                     mirrors=[list(m) for m in site.mirrors])

    async def register_prefixes(self, caller: Caller, prefixes: Any, site: Any) -> int:
        """RPC from a secondary node: home these enterprise prefixes (each under the caller's
        own code) at the caller's own site. A new ``0.NA/<prefix>`` gets HS_ADMIN naming the
        node's admin group and HS_SITE; an existing one keeps every value but its HS_SITE
        (its HS_ADMIN, HS_VLIST and HS_SECKEY stay: the logins they hold keep working).
        Checks every prefix before writing any. Returns how many were new."""
        code = caller.name
        info = self.nodes_info.get(code)
        if caller.role != Role.SECONDARY or info is None:
            raise errors.HandleError(errors.INSUFFICIENT_PERMISSIONS,
                                     f"node {code} registers no prefixes here")
        if type(prefixes) is not list or type(site) is not list or len(site) != 3:
            raise errors.HandleError(errors.INVALID_VALUE, "register_prefixes takes a list of "
                                     "prefixes and a site [prefix, http url, rpc address]")
        where = Site(*(text_param(x, "site") for x in site),
                     mirrors=tuple(tuple(m) for m in info.get("mirrors", ())))
        if (where.http_url, where.rpc_addr) != (info.get("http_url"), info.get("rpc_addr")):
            raise errors.HandleError(errors.INSUFFICIENT_PERMISSIONS,
                                     f"node {code} registers prefixes at its own site only")
        todo: dict[bytes, tuple[str, Handle]] = {}
        for prefix in prefixes:
            identifiers.check_prefix(text_param(prefix, "prefix", 255))
            if not identifiers.is_under(prefix, code):
                raise errors.HandleError(errors.INSUFFICIENT_PERMISSIONS,
                                         f"node {code} may register prefixes under {code} only",
                                         handle=prefix)
            handle = self.parse(f"{identifiers.NA_PREFIX}/{prefix}")
            self.check_homed(handle)
            todo.setdefault(handle.key, (prefix, handle))
        now = int(self.clock())
        ttl = self.config.cache.site_ttl
        new, writes = 0, []
        async with self.locks.hold(todo):
            for key, (prefix, handle) in todo.items():
                current = self.values_of(handle.text)
                new += current is None
                here = dataclasses.replace(where, prefix=prefix)
                if (current is not None and site_of(prefix, current) == here
                        and any(v.type == "HS_ADMIN" for v in current)):
                    continue  # as it was (a node's restart): no write, nothing to replicate
                values = [v for v in current or () if v.type != "HS_SITE"]
                if not any(v.type == "HS_ADMIN" for v in values):
                    values.append(records.admin_value(
                        f"{identifiers.NA_PREFIX}/{code}", ADMIN_GROUP_INDEX,
                        index=_free_index(values, records.ADMIN_INDEX), timestamp=now))
                values = site_values(here, values, ttl=ttl, now=now)
                writes.append((key, records.encode(handle.text, values)))
            if writes:
                await self._store(writes)
        return new

    def enterprises(self) -> int:
        """Registered enterprise prefixes: 0.NA records below a secondary node's prefix."""
        na = identifiers.make_key(identifiers.NA_PREFIX + "/", self.case_sensitive)
        codes = {c.upper() for c in self.nodes_info}
        n = 0
        after = None
        while chunk := self.store.scan(na, after=after, limit=SCAN_CHUNK):
            for key, _ in chunk:
                prefix = key[len(na):].decode()
                if prefix.upper() not in codes and any(identifiers.is_under(prefix, c)
                                                       for c in codes):
                    n += 1
            after = chunk[-1][0]
        return n

    def rpc_handlers(self) -> dict:
        """RPC methods and who may call them (``resolver.rpc_auth``)."""
        def delegate(caller: Caller, prefix: Any) -> list:
            site, ttl = self.delegate(identifiers.check_prefix(text_param(prefix, "prefix", 255)))
            return [site.wire(), ttl]
        return dict(super().rpc_handlers(),
                    register_prefixes=Method(self.register_prefixes, [Role.SECONDARY]),
                    report=Method(self.report_from, [Role.SECONDARY, Role.RECURSIVE]),
                    delegate=Method(delegate, [Role.RECURSIVE, Role.SECONDARY]))

    # ------------------------------------------------------------------ statistics
    def report_from(self, caller: Caller, code: Any, stats: Any) -> None:
        """RPC notification: a secondary node reports its own code only; a recursive node
        ``recursive`` or ``recursive@<process>`` (several processes may serve it)."""
        mine = (code == caller.name if caller.role == Role.SECONDARY  # a recursive node: its
                else caller.role == Role.RECURSIVE and is_recursive_code(code)  # own name
                and code.split("@", 1)[0] == caller.name)
        if not mine:
            raise errors.HandleError(errors.INSUFFICIENT_PERMISSIONS,
                                     f"node {caller.name} may not report for {str(code)[:70]}")
        self.report(code, stats)

    def report(self, code: str, stats: Any) -> None:
        """A node's latest counters. Kept only for the top-level node itself, the known
        secondary nodes (``nodes_info``) and up to ``rpc.max_recursive_reports`` recursive
        processes (the one reported longest ago makes room); ``stats`` must pass
        ``check_stats``. HandleError 202 otherwise, and nothing is kept."""
        recursive = is_recursive_code(code)
        if not (code == Role.TOP.value or code in self.nodes_info or recursive):
            raise errors.HandleError(errors.INVALID_VALUE, "report for an unknown node")
        clean = check_stats(stats, self.config.rpc)
        if recursive and code not in self.reports:
            kept = [c for c in self.reports if is_recursive_code(c)]
            if len(kept) >= self.config.rpc.max_recursive_reports:
                del self.reports[min(kept, key=lambda c: self.reports[c][1])]
        self.reports[code] = (clean, self.clock())

    def statistics(self) -> dict:
        """The network's totals and per-node rows, from checked reports (any stored report
        renders: a field that is not a number counts 0)."""
        rows = []
        for code, info in sorted(self.nodes_info.items()):
            stats, at = self.reports.get(code, ({}, None))
            rows.append({"node": code, "name": info.get("name", ""),
                         "industry": info.get("industry", ""), "city": info.get("city", ""),
                         "httpUrl": info.get("http_url", ""),
                         **{k: count(stats, k) for k in ("enterprises", "identifiers",
                                                         "resolutions", "registrations")},
                         "since": text(stats, "since"),
                         "reportedAgo": None if at is None else round(self.clock() - at, 1)})
        recursive = {code: plain(s) for code, (s, _) in self.reports.items()
                     if is_recursive_code(code)}
        return {
            "responseCode": errors.SUCCESS,
            "totals": {
                "secondaryNodes": len(self.nodes_info),
                "industries": len({r["industry"] for r in rows if r["industry"]}),
                "enterprises": self.enterprises(),
                "identifiers": sum(r["identifiers"] for r in rows),
                "resolutions": sum(r["resolutions"] for r in rows),
                "recursiveResolutions": sum(count(s, "resolutions") for s in recursive.values()),
                "registrations": sum(r["registrations"] for r in rows),
            },
            "nodes": rows,
            "recursive": recursive,
            "since": self.since,  # this top-level node's start; each row has its node's
            "notes": STATS_NOTES,
        }


# ---------------------------------------------------------------------- reports, checked
_RECURSIVE_CODE = re.compile(r"recursive(-[a-z0-9]{1,32}){0,2}(@[0-9A-Za-z_.-]{1,32})?")
MAX_STAT_KEY = 64  # characters of a field name in a report
MAX_COUNT = 2**63  # counts are 0 <= n < 2**63 (what a node's counters can reach)


def is_recursive_code(code: Any) -> bool:
    """``recursive[-<city>]`` or ``recursive[-<city>]@<process>``: what the recursive nodes'
    processes report as."""
    return type(code) is str and _RECURSIVE_CODE.fullmatch(code) is not None


def check_stats(stats: Any, config: RpcConfig) -> dict:
    """A copy of a report if it is a small flat dict of field name -> count, finite number,
    bool or short text (``config.max_report_fields``, ``max_report_text``); HandleError 202
    naming the first problem otherwise."""
    def bad(why: str) -> errors.HandleError:
        return errors.HandleError(errors.INVALID_VALUE, f"malformed report: {why}")
    if type(stats) is not dict:
        raise bad("not a map")
    if len(stats) > config.max_report_fields:
        raise bad(f"more than {config.max_report_fields} fields")
    clean = {}
    for key, value in stats.items():
        if type(key) is not str or not 0 < len(key) <= MAX_STAT_KEY:
            raise bad(f"field names are text of 1 to {MAX_STAT_KEY} characters")
        if isinstance(value, str):  # a Role is text too
            value = str(value)
        kind = type(value)
        ok = (kind is bool or (kind is int and 0 <= value < MAX_COUNT)
              or (kind is float and math.isfinite(value) and 0 <= value < MAX_COUNT)
              or (kind is str and len(value) <= config.max_report_text))
        if not ok:
            raise bad(f"field {key}: a count, finite number, bool or short text")
        clean[key] = value
    return clean


def count(stats: Any, key: str) -> int | float:
    """A numeric field of a stored report, 0 when absent or not a finite count."""
    value = stats.get(key, 0) if type(stats) is dict else 0
    return value if type(value) in (int, float) and 0 <= value < MAX_COUNT else 0


def text(stats: Any, key: str) -> str | None:
    """A text field of a stored report, None when absent or not text."""
    value = stats.get(key) if type(stats) is dict else None
    return value if type(value) is str else None


def plain(stats: Any) -> dict:
    """The fields of a stored report that render as JSON scalars (all of a checked one)."""
    if type(stats) is not dict:
        return {}
    return {k: v for k, v in stats.items() if type(k) is str and (
        type(v) in (bool, str) or (type(v) in (int, float) and 0 <= v < MAX_COUNT))}


def _free_index(values: list[Value], start: int) -> int:
    """``start``, or the next index after it no value of ``values`` holds."""
    used = {v.index for v in values}
    return next(i for i in range(start, records.MAX_INDEX) if i not in used)
