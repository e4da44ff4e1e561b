"""The national top-level node: where every prefix is served, and the statistics of the network.

It holds ``0.NA/<prefix>`` records, as Handle's Global Handle Registry does: an HS_SITE value
says which node serves the prefix (its HTTP and msgpack-RPC interfaces), HS_ADMIN who may
change it. Secondary nodes register their enterprise prefixes here, authenticated as the
owner of their own node prefix (``300:0.NA/88.118``), and report counts.

Invariants: it stores and serves only ``0.NA/<prefix>`` records (any other handle is 301);
a prefix is served by the longest registered prefix above it that has an HS_SITE value; the
HS_SITE values it writes carry ``config.cache.site_ttl``. Writes follow the secondary node's
rules (``resolver.authority``), through the same ``_store``.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from resolver import auth, errors, identifiers, records
from resolver.authority import ADMIN_GROUP_INDEX, prefix_record
from resolver.clock import SYSTEM, Clock
from resolver.config import Config
from resolver.identifiers import Handle
from resolver.net import split_address
from resolver.nodes import SCAN_CHUNK, STATS_NOTES, SecondaryNode
from resolver.records import Value
from resolver.resolution import Site
from resolver.roles import Role

# Protocol data, not tunables: where HS_SITE sits in a 0.NA/<prefix> record and the name of
# the msgpack-RPC interface in it are what every node reads back (parse_site).
SITE_INDEX = 1
RPC_PROTOCOL = "MSGPACK-RPC"


def site_value(site: Site, *, ttl: int, now: int = 0) -> Value:
    """An HS_SITE value in Handle.Net's JSON shape, with an HTTP and a msgpack-RPC interface."""
    http = urlsplit(site.http_url)
    host, rpc_port = split_address(site.rpc_addr)
    server = {"serverId": 1, "address": http.hostname,
              "interfaces": [{"query": True, "admin": True, "protocol": "HTTP", "port": http.port},
                             {"query": True, "admin": False, "protocol": RPC_PROTOCOL,
                              "port": rpc_port, "address": host}]}
    return Value(SITE_INDEX, "HS_SITE", {"version": 1, "protocolVersion": "2.10",
                                         "serialNumber": 1, "primaryMask": {"primary": True},
                                         "attributes": [{"name": "desc", "value": site.prefix}],
                                         "servers": [server]},
                 "site", ttl=ttl, timestamp=now)


def parse_site(prefix: str, value: Any) -> Site:
    server = value["servers"][0]
    by_proto = {i["protocol"]: i for i in server["interfaces"]}
    http = by_proto["HTTP"]
    rpc = by_proto[RPC_PROTOCOL]
    host = server["address"]
    rpc_host = rpc.get("address", host)
    return Site(prefix, f"http://{host}:{http['port']}", f"{rpc_host}:{rpc['port']}")


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
            for v in self.values_of(f"{identifiers.NA_PREFIX}/{anc}") or ():
                if v.type == "HS_SITE":
                    return parse_site(anc, v.value), v.ttl
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
        elif any(v.type == "HS_SITE" and parse_site(code, v.value) == site for v in current):
            values = None  # as it was: keep the record (and the login it holds)
        else:  # the node moved (another --port): a new HS_SITE, the same login
            values = [v for v in current if v.type != "HS_SITE"]
        if values is not None:
            values = values + [site_value(site, ttl=self.config.cache.site_ttl, now=now)]
            await self._store([(handle.key, records.encode(handle.text, values))])
        self.nodes_info[code] = dict(info or {}, http_url=site.http_url, rpc_addr=site.rpc_addr)

    async def register_prefixes(self, user: str, secret: str, prefixes: list[str],
                                site: list[str]) -> int:
        """RPC from a secondary node: home these enterprise prefixes at ``site``.

        Each gets ``0.NA/<prefix>`` with HS_SITE and HS_ADMIN naming the node's admin group.
        Returns how many were new.
        """
        identity = self.authenticate(auth.parse_identity(user), secret)
        where = Site(*site)
        now = int(self.clock())
        new = 0
        for prefix in prefixes:
            identifiers.check_prefix(prefix)
            handle = self.parse(f"{identifiers.NA_PREFIX}/{prefix}")
            values = [records.admin_value(f"0.NA/{identity.handle.partition('/')[2]}",
                                          ADMIN_GROUP_INDEX, timestamp=now),
                      site_value(Site(prefix, where.http_url, where.rpc_addr),
                                 ttl=self.config.cache.site_ttl, now=now)]
            new += await self.put(handle, values, identity=identity, overwrite=True)
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
        def delegate(prefix: str) -> list:
            site, ttl = self.delegate(prefix)
            return [[site.prefix, site.http_url, site.rpc_addr], ttl]
        return dict(super().rpc_handlers(), register_prefixes=self.register_prefixes,
                    report=self.report, delegate=delegate)

    # ------------------------------------------------------------------ statistics
    def report(self, code: str, stats: dict) -> None:
        """RPC notification from a node: its latest counters."""
        self.reports[code] = (stats, self.clock())

    def statistics(self) -> dict:
        rows = []
        for code, info in sorted(self.nodes_info.items()):
            stats, at = self.reports.get(code, ({}, None))
            rows.append({"node": code, "name": info.get("name", ""),
                         "industry": info.get("industry", ""), "city": info.get("city", ""),
                         "httpUrl": info.get("http_url", ""),
                         "enterprises": stats.get("enterprises", 0),
                         "identifiers": stats.get("identifiers", 0),
                         "resolutions": stats.get("resolutions", 0),
                         "registrations": stats.get("registrations", 0),
                         "since": stats.get("since"),
                         "reportedAgo": None if at is None else round(self.clock() - at, 1)})
        recursive = {code: s for code, (s, _) in self.reports.items()
                     if s.get("role") == Role.RECURSIVE}
        return {
            "responseCode": errors.SUCCESS,
            "totals": {
                "secondaryNodes": len(self.nodes_info),
                "industries": len({r["industry"] for r in rows if r["industry"]}),
                "enterprises": self.enterprises(),
                "identifiers": sum(r["identifiers"] for r in rows),
                "resolutions": sum(r["resolutions"] for r in rows),
                "recursiveResolutions": sum(s.get("resolutions", 0) for s in recursive.values()),
                "registrations": sum(r["registrations"] for r in rows),
            },
            "nodes": rows,
            "recursive": recursive,
            "since": self.since,  # this top-level node's start; each row has its node's
            "notes": STATS_NOTES,
        }
