"""Consistency of a `Topology`: every problem found, reported at once. Pure, no I/O.

`validate` raises one `TopologyError` whose ``problems`` list names each offending item, so
a hand-edited topology file is fixed in one pass. It judges a topology already built (by a
preset or by `topology.tomlio.from_toml`, which checks only the file's structure) and never
touches the network: whether ports are free is `topology.ports.find_ports_in_use`.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict

from resolver.identifiers import is_under

from . import mirrors, places
from .model import (MAX_PORT, MIN_PORT, RECURSIVE, Place, Topology, TopologyError, ancestors,
                    is_code)

__all__ = ["validate"]

_SLUG_RE = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*")
_RECURSIVE_NAME_RE = re.compile(r"recursive-[a-z0-9]+(?:-[a-z0-9]+)*")  # rpc_auth.role_of


def _place_problems(what: str, p: Place) -> list[str]:
    """A node's place: a city (in `topology.places`, or with both lat and lon), sane degrees."""
    out = []
    if not isinstance(p.city, str) or not p.city.strip():
        out.append(f"{what}: city must be a non-empty string, got {p.city!r}")
    if (p.lat is None) != (p.lon is None):
        out.append(f"{what}: give both lat and lon, or neither (then the city's are used)")
    elif p.lat is None and isinstance(p.city, str) and p.city.strip() and not places.known(p.city):
        out.append(f"{what}: unknown city {p.city!r}: give its lat and lon, or use one of "
                   f"topology.places ({len(places.CITIES)} cities)")
    for key, value, bound in (("lat", p.lat, 90), ("lon", p.lon, 180)):
        if value is not None and not (isinstance(value, (int, float)) and -bound <= value <= bound):
            out.append(f"{what}: {key} {value!r} is outside -{bound}..{bound} degrees")
    return out


def validate(topology: Topology) -> None:
    """Check *topology* for consistency; raise TopologyError listing every problem found.

    Checks: code syntax (node codes and enterprise prefixes are dotted digit segments,
    industry codes are slugs); duplicate industry codes, node codes and enterprise prefixes;
    node codes overlapping (one a dotted prefix of another); nodes and enterprises referring
    to unknown industries; enterprises referring to unknown nodes or whose prefix is not
    strictly under their node's code; every node's city known to `topology.places` or given
    with lat and lon (both, within range); recursive node names ``recursive-<slug>``, unique;
    mirrors (``topology.mirrors.problems``: a known primary, named ``<primary>~<city>``, in
    another city than the primary's, names unique); ports outside 1..65535; one (host, port)
    used twice anywhere among all nodes' HTTP and RPC ports, mirrors' included. Nothing here touches the network — see
    `find_ports_in_use` for that.
    """
    problems: list[str] = []
    add = problems.append
    t = topology

    if isinstance(t.seed, bool) or not isinstance(t.seed, int):
        add(f"network seed must be an integer, got {t.seed!r}")
    ipe = t.identifiers_per_enterprise
    if isinstance(ipe, bool) or not isinstance(ipe, int) or ipe < 0:
        add(f"identifiers_per_enterprise must be a non-negative integer, got {ipe!r}")

    # Industries.
    industry_codes = Counter(i.code for i in t.industries)
    for ind in t.industries:
        if not (isinstance(ind.code, str) and _SLUG_RE.fullmatch(ind.code)):
            add(f"industry {ind.code!r} ({ind.name!r}): code is not a lowercase slug")
    for code, n in industry_codes.items():
        if n > 1:
            add(f"industry code {code!r} is used {n} times")

    # Secondary nodes.
    node_codes = Counter(n.code for n in t.secondaries)
    for node in t.secondaries:
        if not is_code(node.code):
            add(f"secondary node {node.code!r} ({node.name!r}): code is not dotted digit segments "
                "like '88.118'")
        if node.industry not in industry_codes:
            add(f"secondary node {node.code!r}: unknown industry {node.industry!r}")
    for code, n in node_codes.items():
        if n > 1:
            add(f"secondary node code {code!r} is used {n} times")
    valid_codes = {c for c in node_codes if is_code(c)}
    for code in sorted(valid_codes):
        for anc in ancestors(code):
            if anc in valid_codes:
                add(f"secondary node codes overlap: {code!r} lies under {anc!r}")

    # Enterprises.
    prefixes = Counter(e.prefix for e in t.enterprises)
    for ent in t.enterprises:
        what = f"enterprise {ent.prefix!r}"
        if not is_code(ent.prefix):
            add(f"{what} ({ent.name!r}): prefix is not dotted digit segments like '88.118.8'")
        if ent.node not in node_codes:
            add(f"{what}: unknown secondary node {ent.node!r}")
        elif isinstance(ent.prefix, str) and isinstance(ent.node, str) and not is_under(
            ent.prefix, ent.node, strict=True
        ):
            add(f"{what}: prefix is not under its node's code {ent.node!r}")
        if ent.industry not in industry_codes:
            add(f"{what}: unknown industry {ent.industry!r}")
    for prefix, n in prefixes.items():
        if n > 1:
            add(f"enterprise prefix {prefix!r} is used {n} times")

    # Places and recursive nodes' names.
    problems += _place_problems("top-level node", t.top_place)
    for r in t.recursives():
        problems += _place_problems(f"recursive node {r.name!r}", r.place)
    for node in t.secondaries:
        problems += _place_problems(f"secondary node {node.code!r}",
                                    Place(node.city, node.lat, node.lon))
    names = Counter(r.name for r in t.recursives())
    for r in t.more_recursive:
        if not (isinstance(r.name, str) and _RECURSIVE_NAME_RE.fullmatch(r.name)):
            add(f"recursive node {r.name!r}: name must be {RECURSIVE}-<lowercase slug>, "
                "e.g. recursive-beijing")
    for name, n in names.items():
        if n > 1:
            add(f"recursive node name {name!r} is used {n} times")
    for m in t.mirrors:  # mirrors (issue 11): places here, the rest in topology.mirrors
        problems += _place_problems(f"mirror {m.name!r}", m.place)
    problems += mirrors.problems(t)

    # Addresses.
    users: defaultdict[tuple[str, int], list[str]] = defaultdict(list)
    for label, host, port in t.endpoints():
        if not isinstance(host, str) or not host:
            add(f"{label}: host must be a non-empty string, got {host!r}")
            continue
        if isinstance(port, bool) or not isinstance(port, int):
            add(f"{label}: port must be an integer, got {port!r}")
            continue
        if not MIN_PORT <= port <= MAX_PORT:
            add(f"{label}: port {port} is outside {MIN_PORT}..{MAX_PORT}")
            continue
        users[(host.lower(), port)].append(label)
    for (host, port), labels in users.items():
        if len(labels) > 1:
            add(f"address {host}:{port} is used by {len(labels)} endpoints: {', '.join(labels)}")
    for addr in t.addresses():  # HTTP ports serve plain HTTP or HTTPS (cluster CA)
        if addr.scheme not in ("http", "https"):
            add(f"{addr.host}:{addr.http_port}: scheme must be http or https, got {addr.scheme!r}")

    problems += population_problems(t)

    if problems:
        raise TopologyError(f"invalid topology {t.name!r}", problems)


def population_problems(t: Topology) -> list[str]:
    """The population mode, enterprise counts and templates."""
    from resolver.population import CAPACITY
    out = []
    if t.population not in ("full", "demo", "none"):
        out.append(f"[network] population must be full, demo or none, got {t.population!r}")
    for e in t.enterprises:
        if isinstance(e.identifiers, bool) or not isinstance(e.identifiers, int) \
                or not 0 <= e.identifiers <= CAPACITY:
            out.append(f"enterprise {e.prefix}: identifiers must be 0..{CAPACITY}, "
                       f"got {e.identifiers!r}")
    industries = {i.code for i in t.industries}
    for tp in t.templates:
        out += tp.problems()
        if tp.industry not in industries:
            out.append(f"template {tp.industry}: no such industry")
    return out
