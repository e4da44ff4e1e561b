"""The shape of a simulated identifier resolution network, as plain frozen data.

An identifier such as ``88.118.8/SN-0001`` reads, left to right: national prefix ``88``,
secondary node code ``88.118``, enterprise prefix ``88.118.8``, then ``/`` and the
enterprise's own suffix. The network has one top-level node, any number of secondary nodes
(each described by a `SecondarySpec` that owns exactly one node code and serves the
enterprise prefixes under it) and one or more recursive nodes, the entry points clients talk
to: ``recursive`` (the first, ``Topology.recursive``) and any further ones
(``Topology.more_recursive``, named ``recursive-<city>``). Every node has a place: a city,
whose coordinates come from `topology.places` unless the node gives its own
(``Topology.place_of``). Nodes may sit on different hosts: each has its own address.
A secondary node, or the top-level node, may have mirrors (``topology.mirrors``).

This module holds the data and its lookups only. Invariants: every class is frozen and
hashable (sequences are stored as tuples however they were given), so two topologies built
the same way compare equal; nothing here does I/O or checks consistency. Consistency is
`topology.validation.validate`, TOML is `topology.tomlio`, probing ports is
`topology.ports`.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass

from . import places

__all__ = ["MAX_PORT", "MIN_PORT", "Enterprise", "Industry", "NodeAddress", "Place",
           "RecursiveSpec", "SecondarySpec", "Topology", "TopologyError", "ancestors", "is_code"]

# A node code or enterprise prefix: a national prefix (``88`` in China, but any digits are
# accepted) followed by at least one ``.digits`` segment.
_CODE_RE = re.compile(r"[0-9]+(?:\.[0-9]+)+")

MIN_PORT = 1
MAX_PORT = 65535


class TopologyError(ValueError):
    """A topology (or its TOML text) is malformed.

    ``problems`` lists every individual problem found, each naming the offending item; the
    message repeats them one per line.
    """

    def __init__(self, message: str, problems: list[str] | tuple[str, ...] = ()) -> None:
        self.summary = message
        self.problems: list[str] = list(problems)
        if self.problems:
            count = len(self.problems)
            message = f"{message} ({count} problem{'s' if count != 1 else ''}):\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# Codes


def is_code(text: object) -> bool:
    """True if *text* is a dotted digit code such as ``88.118`` or ``86.5.12``."""
    return isinstance(text, str) and _CODE_RE.fullmatch(text) is not None


def ancestors(code: str) -> list[str]:
    """Proper dotted prefixes of *code*, longest first: ``88.118.8`` → ``88.118``, ``88``."""
    parts = code.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, slots=True)
class Industry:
    code: str  # short slug, e.g. "electronics"
    name: str


@dataclass(frozen=True, slots=True)
class NodeAddress:
    host: str
    http_port: int
    rpc_port: int
    scheme: str = "http"  # "https": the HTTP port serves TLS (``idsim up --tls``)

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://{_host_for_url(self.host)}:{self.http_port}"

    @property
    def rpc_addr(self) -> str:
        return f"{_host_for_url(self.host)}:{self.rpc_port}"


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class SecondarySpec:
    """A secondary node as the topology describes it: code, where it is, how it is reached.

    The running node built from it is `resolver.nodes.SecondaryNode`.
    """

    code: str  # node code, e.g. "88.118"
    name: str
    city: str
    industry: str  # Industry.code
    address: NodeAddress
    lat: float | None = None  # explicit coordinates (both or neither); None: the city's
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class Place:
    """Where a node is: its city, and explicit coordinates overriding `topology.places`."""
    city: str
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class RecursiveSpec:
    """A recursive node: its name (``recursive``, ``recursive-beijing``), place, address."""
    name: str
    place: Place
    address: NodeAddress


RECURSIVE = "recursive"  # the first recursive node's name; others are recursive-<city slug>


@dataclass(frozen=True, slots=True)
class Enterprise:
    prefix: str  # enterprise prefix, e.g. "88.118.8"
    name: str
    node: str  # SecondarySpec.code
    industry: str  # Industry.code
    identifiers: int = 0  # registered identifiers of its synthetic population (s1, issue 12)


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    seed: int
    top: NodeAddress
    recursive: NodeAddress
    industries: tuple[Industry, ...]
    secondaries: tuple[SecondarySpec, ...]
    enterprises: tuple[Enterprise, ...]
    identifiers_per_enterprise: int = 10
    # places (issue 10): the top-level node's and the first recursive node's, then the
    # further recursive nodes (each alone in its process, ports after the secondaries')
    top_place: Place = Place("Guangzhou")
    recursive_place: Place = Place("Guangzhou")
    more_recursive: tuple[RecursiveSpec, ...] = ()
    # industry data templates (resolver.templates.Template, by industry code)
    # and what the secondary nodes serve: "full" the synthetic population of each
    # enterprise's ``identifiers``, "demo" seeded demo records, "none" neither
    templates: tuple = ()
    population: str = "demo"
    # mirrors (issue 11): read-only copies of a secondary node, and standby top-level nodes
    # (primary "top"), each a topology.mirrors.MirrorSpec; ports after every other node's
    mirrors: tuple = ()

    def __post_init__(self) -> None:
        # Accept lists from callers but always store tuples, so topologies stay hashable and
        # compare equal however they were built.
        for field in ("industries", "secondaries", "enterprises", "more_recursive", "templates",
                      "mirrors"):
            value = getattr(self, field)
            if not isinstance(value, tuple):
                object.__setattr__(self, field, tuple(value))

    # -- lookups ---------------------------------------------------------------------------

    def secondary(self, code: str) -> SecondarySpec:
        """The secondary node with node code *code*; KeyError if there is none."""
        for node in self.secondaries:
            if node.code == code:
                return node
        raise KeyError(f"no secondary node with code {code!r}")

    def industry(self, code: str) -> Industry:
        """The industry with slug *code*; KeyError if there is none."""
        for ind in self.industries:
            if ind.code == code:
                return ind
        raise KeyError(f"no industry with code {code!r}")

    def enterprise(self, prefix: str) -> Enterprise:
        """The enterprise with prefix *prefix*; KeyError if there is none."""
        for ent in self.enterprises:
            if ent.prefix == prefix:
                return ent
        raise KeyError(f"no enterprise with prefix {prefix!r}")

    def enterprises_of(self, node_code: str) -> tuple[Enterprise, ...]:
        """Enterprises registered with the secondary node *node_code*, in topology order."""
        return tuple(e for e in self.enterprises if e.node == node_code)

    def node_for_prefix(self, prefix: str) -> SecondarySpec | None:
        """The secondary node responsible for *prefix*, or None.

        That is the node whose code is the longest dotted-segment prefix of *prefix* (a node
        also answers for its own code). A full identifier is accepted too: everything from the
        first ``/`` on is ignored. ``88.1180.1`` is not under ``88.118``.
        """
        prefix = prefix.split("/", 1)[0]
        by_code = {n.code: n for n in self.secondaries}
        for candidate in [prefix, *ancestors(prefix)]:
            node = by_code.get(candidate)
            if node is not None:
                return node
        return None

    # -- places and recursive nodes ---------------------------------------------------------

    def recursives(self) -> tuple[RecursiveSpec, ...]:
        """Every recursive node, the first (``recursive``, at ``self.recursive``) first."""
        return (RecursiveSpec(RECURSIVE, self.recursive_place, self.recursive),
                *self.more_recursive)

    def node_names(self) -> list[str]:
        """Every node's name: the recursive nodes, ``top``, the secondary nodes' codes, then
        the mirrors' (``<primary>~<city>``, ``topology.mirrors``)."""
        return [*(r.name for r in self.recursives()), "top", *(s.code for s in self.secondaries),
                *(m.name for m in self.mirrors)]

    def address_of(self, name: str) -> NodeAddress:
        """The address of the node called *name*; KeyError if there is none."""
        recursive = {r.name: r.address for r in (*self.recursives(), *self.mirrors)}
        return self.top if name == "top" else recursive.get(name) or self.secondary(name).address

    def place_of(self, name: str) -> tuple[str, float, float]:
        """``(city, latitude, longitude)`` of node *name*: its explicit coordinates, else its
        city's in `topology.places`. KeyError for an unknown node, or a city not in the
        table without coordinates (`validate` reports that)."""
        recursive = {r.name: r.place for r in (*self.recursives(), *self.mirrors)}
        s = None if name == "top" or name in recursive else self.secondary(name)
        place = self.top_place if name == "top" else recursive.get(name) or Place(
            s.city, s.lat, s.lon)
        if place.lat is not None and place.lon is not None:
            return place.city, place.lat, place.lon
        return (place.city, *places.coordinates(place.city))

    def with_recursive_cities(self, cities: list[str] | tuple[str, ...]) -> Topology:
        """A copy with one recursive node per city (``recursive`` in the first, then
        ``recursive-<city>``, ``-2`` … for a city named twice), addresses left to be set by
        `with_ports` (they copy the first's for now). Cities keep the spelling given when not
        in the table (`validate` then asks for coordinates)."""
        if not cities:
            raise TopologyError("at least one recursive node's city is needed")
        named = [places.canonical(c) if places.known(c) else c for c in cities]
        more, seen = [], {RECURSIVE}
        for city in named[1:]:
            base = f"{RECURSIVE}-{places.slug(city) or 'node'}"
            name, i = base, 2
            while name in seen:
                name, i = f"{base}-{i}", i + 1
            seen.add(name)
            more.append(RecursiveSpec(name, Place(city), self.recursive))
        return dataclasses.replace(self, recursive_place=Place(named[0]),
                                   more_recursive=tuple(more))

    # -- summaries -------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Headline numbers, in the terms the published statistics use."""
        return {
            "top_level_nodes": 1,
            "recursive_nodes": 1 + len(self.more_recursive),
            "secondary_nodes": len(self.secondaries),
            "industries": len(self.industries),
            "industries_served": len({n.industry for n in self.secondaries}),
            "cities": len({n.city for n in self.secondaries}),
            "enterprises": len(self.enterprises),
            "identifiers": len(self.enterprises) * self.identifiers_per_enterprise,
        }

    def nodes_by_city(self) -> dict[str, int]:
        """Number of secondary nodes per city, most first (ties by name)."""
        c = Counter(n.city for n in self.secondaries)
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    def enterprises_per_node(self) -> dict[str, int]:
        """Number of enterprises per secondary node code, in secondary-node order."""
        c = Counter(e.node for e in self.enterprises)
        return {n.code: c.get(n.code, 0) for n in self.secondaries}

    # -- re-addressing ---------------------------------------------------------------------

    def with_ports(
        self, base_port: int = 8000, host: str = "127.0.0.1", rpc_base: int | None = None
    ) -> Topology:
        """A copy with every node re-addressed on *host* with consecutive ports.

        HTTP ports: recursive node ``base_port``, top-level node ``base_port + 1``, secondary
        node *i* (in topology order) ``base_port + 2 + i``, then the further recursive nodes
        (``more_recursive``) after the secondary nodes, then the mirrors. RPC ports use the same offsets from
        *rpc_base*, which defaults to ``base_port + 1000``. Raises TopologyError if a port
        would fall outside 1..65535 or the HTTP and RPC ranges would overlap.
        """
        rpc = base_port + 1000 if rpc_base is None else rpc_base
        span = len(self.secondaries) + 2 + len(self.more_recursive) + len(self.mirrors)
        problems = []
        for label, start in (("base_port", base_port), ("rpc_base", rpc)):
            if isinstance(start, bool) or not isinstance(start, int):
                problems.append(f"{label} must be an integer, got {start!r}")
            elif start < MIN_PORT or start + span - 1 > MAX_PORT:
                problems.append(
                    f"{label} {start}: ports {start}..{start + span - 1} for {span} nodes "
                    f"must lie within {MIN_PORT}..{MAX_PORT}"
                )
        if not problems and base_port < rpc + span and rpc < base_port + span:
            problems.append(
                f"HTTP ports {base_port}..{base_port + span - 1} overlap RPC ports "
                f"{rpc}..{rpc + span - 1}"
            )
        if problems:
            raise TopologyError("cannot re-address topology", problems)
        return dataclasses.replace(
            self,
            recursive=NodeAddress(host, base_port, rpc, self.recursive.scheme),
            top=NodeAddress(host, base_port + 1, rpc + 1, self.top.scheme),
            secondaries=tuple(
                dataclasses.replace(n, address=NodeAddress(host, base_port + 2 + i, rpc + 2 + i,
                                                           n.address.scheme))
                for i, n in enumerate(self.secondaries)
            ),
            more_recursive=tuple(
                dataclasses.replace(r, address=NodeAddress(
                    host, base_port + 2 + len(self.secondaries) + i,
                    rpc + 2 + len(self.secondaries) + i, r.address.scheme))
                for i, r in enumerate(self.more_recursive)
            ),
            mirrors=tuple(dataclasses.replace(m, address=NodeAddress(
                host, base_port + span - len(self.mirrors) + i,
                rpc + span - len(self.mirrors) + i, m.address.scheme))
                for i, m in enumerate(self.mirrors)),
        )

    def with_scheme(self, scheme: str) -> Topology:
        """A copy whose every node serves its HTTP port with *scheme* (``http``/``https``)."""
        return dataclasses.replace(
            self,
            recursive=dataclasses.replace(self.recursive, scheme=scheme),
            top=dataclasses.replace(self.top, scheme=scheme),
            secondaries=tuple(
                dataclasses.replace(n, address=dataclasses.replace(n.address, scheme=scheme))
                for n in self.secondaries
            ),
            more_recursive=tuple(
                dataclasses.replace(r, address=dataclasses.replace(r.address, scheme=scheme))
                for r in self.more_recursive
            ),
            mirrors=tuple(dataclasses.replace(m, address=dataclasses.replace(m.address,
                                                                             scheme=scheme))
                          for m in self.mirrors),
        )

    def addresses(self) -> list[NodeAddress]:
        """Every node's address: recursive, top-level, the secondary nodes, the further
        recursive nodes, the mirrors."""
        return [self.recursive, self.top, *(n.address for n in self.secondaries),
                *(r.address for r in self.more_recursive), *(m.address for m in self.mirrors)]

    @property
    def uses_tls(self) -> bool:
        """Whether any node serves HTTPS (then its data directory holds the cluster CA)."""
        return any(a.scheme == "https" for a in self.addresses())

    def endpoints(self) -> list[tuple[str, str, int]]:
        """Every listening endpoint as ``(label, host, port)``, HTTP and RPC, all nodes."""
        out: list[tuple[str, str, int]] = []
        nodes = [("recursive node", self.recursive), ("top-level node", self.top)]
        nodes += [(f"secondary node {n.code}", n.address) for n in self.secondaries]
        nodes += [(f"recursive node {r.name}", r.address) for r in self.more_recursive]
        nodes += [(f"mirror {m.name}", m.address) for m in self.mirrors]
        for label, addr in nodes:
            out.append((f"{label} http", addr.host, addr.http_port))
            out.append((f"{label} rpc", addr.host, addr.rpc_port))
        return out

    # -- synthetic population and templates (s1, issue 12) ---------------------------------

    def population_total(self) -> int:
        """Identifiers the enterprises' synthetic populations hold (served in "full" mode)."""
        return sum(e.identifiers for e in self.enterprises)

    def templates_by_industry(self) -> dict:
        """The topology's templates by industry code (``resolver.templates.template_of`` falls
        back to the built-in catalogue for an industry without one)."""
        return {t.industry: t for t in self.templates}
