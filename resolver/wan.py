"""The WAN model: how long a message takes from one node to another, drawn reproducibly.

Pure: no I/O, no clock; the places of the nodes, the config (``resolver.config.WanConfig``)
and any matrix of base delays are passed in. ``resolver.link`` applies what it draws.

A one-way delay on the directed link ``src -> dst`` is, in ms:

* **base**: between two cities, the great-circle (haversine) distance / ``fibre_km_per_ms``
  (light in fibre, ~200 km per ms) x ``route_factor`` (fibre routes are longer than the
  great circle: 2 by default, an assumption in line with measured path inflation, see the
  README) + ``base_ms``; between two nodes of one city, ``intra_city_ms``; a city pair in the
  ``matrix`` replaces the propagation + ``base_ms`` of that pair;
* **jitter**: lognormal, parameterised so its median is ``jitter_median_ms`` and its 99th
  percentile ``jitter_p99_ms`` (heavy right tail, never negative);
* **loss**: each transmission is lost with probability ``loss``; each loss costs a
  retransmission timeout, ``rto_ms`` first and doubling each time it repeats (TCP); after
  ``max_retries`` retransmissions are lost too the message is lost for good (``Delay.lost``);
* **serialisation**: ``nbytes * 8 / bandwidth_mbps`` (0: none).

Invariants: every draw on a link comes from that link's own ``random.Random``, seeded from
(``seed``, src, dst) by a stable hash, so the same seed gives the same sequence on a link
whatever the order links are used in, and links never share draws; the base of a link never
changes; a delay is never negative.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Mapping

from resolver.config import WanConfig

__all__ = ["Delay", "LinkModel", "Place", "WanModel", "great_circle_km", "link_seed",
           "parse_matrix"]

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
Z99 = NormalDist().inv_cdf(0.99)  # 2.326: the standard normal's 99th percentile


@dataclass(frozen=True, slots=True)
class Place:
    """Where a node is: its city and the city's coordinates (degrees)."""
    city: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Delay:
    """One message's one-way delay and what it is made of (ms)."""
    ms: float             # the total: base + jitter + retransmission timeouts + serialisation
    base: float
    jitter: float
    retransmits: int      # transmissions lost before one got through
    serialisation: float
    lost: bool = False    # every transmission lost: the message never arrives


def great_circle_km(a: Place, b: Place) -> float:
    """The haversine distance between two places, km."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat, dlon = lat2 - lat1, math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def link_seed(seed: int, src: str, dst: str) -> int:
    """The seed of the link ``src -> dst``: a stable hash (not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"{seed}\0{src}\0{dst}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def parse_matrix(doc: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """``{"CityA": {"CityB": ms, ...}, ...}`` (a TOML ``[matrix.CityA]`` table) -> one-way base
    delays per (from, to) city pair. A pair given in one direction only holds both ways.
    ValueError naming every malformed entry."""
    given: dict[tuple[str, str], float] = {}
    problems = []
    if not isinstance(doc, Mapping):
        raise ValueError("the matrix must be a table: [matrix.CityA] CityB = ms")
    for a, row in doc.items():
        if not isinstance(row, Mapping):
            problems.append(f"matrix.{a} must be a table of City = ms")
            continue
        for b, ms in row.items():
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0:
                problems.append(f"matrix.{a}.{b} must be a number of ms >= 0, got {ms!r}")
            else:
                given[(a, b)] = float(ms)
    if problems:
        raise ValueError("invalid WAN matrix: " + "; ".join(problems))
    both = {(b, a): ms for (a, b), ms in given.items()}
    both.update(given)
    return both


class LinkModel:
    """One direction between two nodes: a fixed base, draws from the link's own RNG."""

    __slots__ = ("src", "dst", "base_ms", "_config", "_rng", "_mu", "_sigma")

    def __init__(self, src: str, dst: str, base_ms: float, config: WanConfig) -> None:
        self.src, self.dst, self.base_ms = src, dst, base_ms
        self._config = config
        self._rng = random.Random(link_seed(config.seed, src, dst))
        median, p99 = config.jitter_median_ms, config.jitter_p99_ms
        self._mu = math.log(median) if median > 0 else None
        self._sigma = math.log(p99 / median) / Z99 if median > 0 else 0.0

    def jitter(self) -> float:
        """One jitter draw, ms (0 when the median is 0)."""
        if self._mu is None:
            return 0.0
        return self._rng.lognormvariate(self._mu, self._sigma)

    def retransmits(self) -> int:
        """Transmissions lost before one gets through; ``max_retries + 1``: all were lost."""
        p, rng, k = self._config.loss, self._rng, 0
        if p <= 0:
            return 0
        while k <= self._config.max_retries and rng.random() < p:
            k += 1
        return k

    def draw(self, nbytes: int = 0) -> Delay:
        """The delay of one message of ``nbytes`` bytes on this link."""
        c = self._config
        jitter = self.jitter()
        k = self.retransmits()
        rto = c.rto_ms * (2 ** k - 1)  # rto + 2 rto + 4 rto + ... for k losses
        ser = nbytes * 8 / (c.bandwidth_mbps * 1000) if c.bandwidth_mbps > 0 else 0.0
        return Delay(self.base_ms + jitter + rto + ser, self.base_ms, jitter, k, ser,
                     lost=k > c.max_retries)


class WanModel:
    """Every directed link between the nodes of ``places`` (node name -> ``Place``)."""

    def __init__(self, config: WanConfig, places: Mapping[str, Place],
                 matrix: Mapping[tuple[str, str], float] | None = None) -> None:
        problems = []
        if config.fibre_km_per_ms <= 0:
            problems.append("wan.fibre_km_per_ms must be > 0")
        if not 0 <= config.loss < 1:
            problems.append(f"wan.loss must be in [0, 1), got {config.loss}")
        if config.jitter_median_ms > 0 and config.jitter_p99_ms < config.jitter_median_ms:
            problems.append("wan.jitter_p99_ms must be >= wan.jitter_median_ms")
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        self.places = dict(places)
        self.matrix = dict(matrix or {})

    def place(self, node: str) -> Place:
        try:
            return self.places[node]
        except KeyError:
            raise ValueError(f"the WAN model has no place for node {node!r}") from None

    def propagation_ms(self, src: str, dst: str) -> float:
        """Great-circle distance at fibre speed, times the route factor."""
        c = self.config
        return (great_circle_km(self.place(src), self.place(dst)) / c.fibre_km_per_ms
                * c.route_factor)

    def base_ms(self, src: str, dst: str) -> float:
        """The fixed part of every delay on ``src -> dst`` (see the module's doc)."""
        a, b = self.place(src).city, self.place(dst).city
        if (a, b) in self.matrix:
            return self.matrix[(a, b)]
        if a == b:
            return self.config.intra_city_ms
        return self.propagation_ms(src, dst) + self.config.base_ms

    def link(self, src: str, dst: str) -> LinkModel:
        """The link ``src -> dst`` with a fresh RNG at the start of its sequence."""
        return LinkModel(src, dst, self.base_ms(src, dst), self.config)
