"""Mirrors of a topology's nodes, as Handle.Net's mirror servers: where they are, what they
follow, how they are laid out. Pure: data and functions, no I/O.

A mirror is a read-only copy of one node, its primary: a secondary node (it then serves the
same prefixes) or the top-level node (a *standby* top-level node, the national system's
disaster-recovery top nodes, serving the delegations ``0.NA/...``). Its node name is
``<primary>~<city>`` (``resolver.rpc_auth.mirror_name``: ``88.118~Beijing``,
``top~Nanjing``), so ``role_of`` gives ``Role.MIRROR`` and ``primary_of`` its primary. A
``MirrorSpec`` is kept in ``Topology.mirrors``; its place and address work as a recursive
node's (``Topology.place_of``, ``address_of``, ``with_ports``: mirrors' ports come after every
other node's), so the WAN model knows where a mirror is.

``with_mirrors`` is ``idsim up --mirrors``: every secondary node one mirror in another big
city (round-robin over ``MIRROR_CITIES``, so the load spreads evenly), and one standby
top-level node in ``STANDBY_CITY``. ``plan`` puts mirrors in host processes of their own,
never with their primary. ``problems`` is the mirrors' part of
``topology.validation.validate``.

Invariants: a mirror's name is ``mirror_name(primary, city)`` and its city is not its
primary's (validated); a topology without mirrors is laid out, planned and served exactly as
before mirrors existed.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from resolver.roles import Role
from resolver.rpc_auth import MAX_NAME, MIRROR_MARK, mirror_name

from . import places
from .model import NodeAddress, Place, Topology

__all__ = ["MIRROR_CITIES", "STANDBY_CITY", "MirrorSpec", "mirror", "mirrors_of", "plan",
           "primary_address", "problems", "sites", "spec", "standby_tops", "with_mirrors"]

TOP = str(Role.TOP)
# Where --mirrors puts the secondary nodes' mirrors: the national top-level nodes' cities
# other than Guangzhou (Beijing, Shanghai, Wuhan, Chongqing), far from the Guangdong primaries.
MIRROR_CITIES: tuple[str, ...] = ("Beijing", "Shanghai", "Wuhan", "Chongqing")
# The standby top-level node: the national top-level nodes' disaster-recovery centre, Nanjing.
STANDBY_CITY = "Nanjing"


@dataclass(frozen=True, slots=True)
class MirrorSpec:
    """A mirror: its name (``<primary>~<city>``), what it follows (a secondary node's code or
    ``top``), where it is, how it is reached."""
    name: str
    primary: str
    place: Place
    address: NodeAddress


def mirror(primary: str, city: str, address: NodeAddress, lat: float | None = None,
           lon: float | None = None) -> MirrorSpec:
    """The mirror of *primary* in *city* (the table's spelling when ``topology.places`` knows
    it), named as ``rpc_auth`` expects."""
    city = places.canonical(city) if places.known(city) else city
    return MirrorSpec(mirror_name(primary, city), primary, Place(city, lat, lon), address)


# ------------------------------------------------------------------ look-ups

def mirrors_of(topo: Topology, primary: str) -> tuple[MirrorSpec, ...]:
    """The mirrors following *primary* (a secondary node's code, or ``top``), in order."""
    return tuple(m for m in topo.mirrors if m.primary == primary)


def standby_tops(topo: Topology) -> tuple[MirrorSpec, ...]:
    """The standby top-level nodes (mirrors of ``top``)."""
    return mirrors_of(topo, TOP)


def spec(topo: Topology, name: str) -> MirrorSpec:
    """The mirror called *name*; KeyError if there is none."""
    for m in topo.mirrors:
        if m.name == name:
            return m
    raise KeyError(f"no mirror named {name!r}")


def primary_address(topo: Topology, m: MirrorSpec) -> NodeAddress:
    """Where *m*'s primary is reached."""
    return topo.top if m.primary == TOP else topo.secondary(m.primary).address


def sites(topo: Topology, primary: str) -> tuple[tuple[str, str], ...]:
    """``(http_url, rpc_addr)`` of *primary*'s mirrors, as ``resolution.Site.mirrors`` (and so
    the prefix's HS_SITE values) lists them."""
    return tuple((m.address.http_url, m.address.rpc_addr) for m in mirrors_of(topo, primary))


def _city_of(topo: Topology, primary: str) -> str:
    return topo.top_place.city if primary == TOP else topo.secondary(primary).city


def _same_city(a: str, b: str) -> bool:
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    if places.known(a) and places.known(b):
        return places.canonical(a) == places.canonical(b)
    return a.strip().lower() == b.strip().lower()


# ------------------------------------------------------------------ the --mirrors preset

def with_mirrors(topo: Topology, cities: tuple[str, ...] = MIRROR_CITIES,
                 standby: str | None = STANDBY_CITY) -> Topology:
    """A copy of *topo* in which secondary node *i* has one mirror in ``cities[i % n]`` (the
    next one when that is the node's own city) and, with *standby*, the top-level node one
    standby (in *standby*, or the first of *cities* elsewhere than the top-level node when
    it is the same city). Mirrors the topology had are replaced. Addresses are left to be
    set by ``Topology.with_ports`` (they copy the top-level node's for now)."""
    out = []
    for i, node in enumerate(topo.secondaries):
        choices = cities[i % len(cities):] + cities[:i % len(cities)]
        city = next((c for c in choices if not _same_city(c, node.city)), None)
        if city is not None:
            out.append(mirror(node.code, city, topo.top))
    if standby is not None:
        city = next((c for c in (standby, *cities) if not _same_city(c, topo.top_place.city)),
                    None)
        if city is not None:
            out.append(mirror(TOP, city, topo.top))
    return dataclasses.replace(topo, mirrors=tuple(out))


# ------------------------------------------------------------------ host processes

def plan(topo: Topology, workers: int) -> list[list[str]]:
    """Host processes for the mirrors, after the primaries' (``cluster.plan_workers``): each
    standby top-level node alone, then the secondary nodes' mirrors spread over as many
    processes as hold the secondary nodes (``workers - 2``, at least one). No process holds
    a mirror and its primary, so losing one process never loses both."""
    tops = [[m.name] for m in standby_tops(topo)]
    rest = [m.name for m in topo.mirrors if m.primary != TOP]
    share = max(1, min(len(rest), workers - 2))
    return tops + [rest[i::share] for i in range(share) if rest[i::share]]


# ------------------------------------------------------------------ validation

def problems(topo: Topology) -> list[str]:
    """The mirrors' consistency (places and ports are judged with every node's, by
    ``validate``): a known primary; the name ``<primary>~<city>``; a city other than the
    primary's; names unique."""
    out = []
    codes = {s.code for s in topo.secondaries}
    for m in topo.mirrors:
        what = f"mirror {m.name!r}"
        city = m.place.city
        if m.primary != TOP and m.primary not in codes:
            out.append(f"{what}: unknown primary {m.primary!r} (a secondary node's code or top)")
            continue
        if not isinstance(city, str) or any(c in city for c in f"/{MIRROR_MARK}") \
                or not city.isprintable():
            out.append(f"{what}: city {city!r} may not hold '/', '{MIRROR_MARK}' or control "
                       "characters")
            continue
        if m.name != mirror_name(m.primary, city):
            out.append(f"{what}: name must be {mirror_name(m.primary, city)!r} "
                       f"(<primary>{MIRROR_MARK}<city>)")
        elif len(m.name) > MAX_NAME:
            out.append(f"{what}: name longer than {MAX_NAME} characters")
        if _same_city(city, _city_of(topo, m.primary)):
            out.append(f"{what}: in {city}, the city of its primary {m.primary}; a mirror must "
                       "be in another city")
    for name, n in Counter(m.name for m in topo.mirrors).items():
        if n > 1:
            out.append(f"mirror name {name!r} is used {n} times")
    return out
