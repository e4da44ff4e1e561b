"""Which identifiers a load asks for: Zipf-like popularity over what is registered, plus a share
of identifiers that do not exist. Shared by the Locust users and the benchmarks.

Pure and dependency-free: imports nothing asyncio (Locust patches the standard library with
gevent), and takes its random source as a parameter so tests can check the distribution.

Popularity: rank r (1 = most popular) of N registered identifiers is drawn with probability
∝ 1/r^s by inverting the continuous power law (exact enough at these N, O(1) per draw, no
table). Ranks map to identifiers through a fixed stride permutation, so the popular ones are
spread over every enterprise and node rather than all under the first prefix.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from topology.demo import suffix  # pure: no asyncio behind it


def _stride(n: int) -> int:
    """A step coprime with ``n`` near n·0.618 (golden ratio): rank → index is a permutation."""
    step = max(1, int(n * 0.6180339887)) | 1
    while math.gcd(step, n) != 1:
        step += 2
    return step


@dataclass
class Workload:
    prefixes: list[str]
    per_prefix: int
    s: float = 1.1                 # Zipf exponent: 0 = uniform, ~1 = web-like popularity
    unknown_share: float = 0.05    # share of lookups for identifiers that were never registered
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not self.prefixes or self.per_prefix <= 0:
            raise ValueError("a workload needs at least one prefix and one identifier per prefix")
        if not 0 <= self.unknown_share <= 1:
            raise ValueError("unknown_share is a fraction between 0 and 1")
        self.total = len(self.prefixes) * self.per_prefix
        self._step = _stride(self.total)

    def rank(self) -> int:
        """A popularity rank in 1..total, P(r) ∝ r^-s."""
        n, s, u = self.total, self.s, self.rng.random()
        if abs(s - 1.0) < 1e-9:
            r = math.exp(u * math.log(n + 1))
        else:
            a = 1.0 - s
            r = (u * ((n + 1) ** a - 1.0) + 1.0) ** (1.0 / a)
        return min(n, max(1, int(r)))

    def known(self, rank: int) -> str:
        """The identifier at a popularity rank."""
        i = ((rank - 1) * self._step) % self.total
        prefix, n = divmod(i, self.per_prefix)
        return f"{self.prefixes[prefix]}/{suffix(n)}"

    def sample(self) -> tuple[str, bool]:
        """An identifier to resolve and whether it exists."""
        if self.unknown_share and self.rng.random() < self.unknown_share:
            return f"{self.rng.choice(self.prefixes)}/MISSING-{self.rng.getrandbits(48):012x}", False
        return self.known(self.rank()), True

    def new_suffixes(self, tag: str, count: int) -> list[str]:
        """Fresh suffixes for registrations that will not collide across users or runs."""
        base = f"{tag}-{self.rng.getrandbits(40):010x}"
        return [f"{base}-{i}" for i in range(count)]


# (until second, users, spawn rate per second): warm up, double, peak, cool down
RAMP_STAGES = ((10, 10, 10), (25, 25, 10), (45, 50, 10), (55, 10, 20))


def stage_at(stages, t: float) -> tuple[int, float] | None:
    """The (users, spawn rate) a staged shape wants at ``t`` seconds; None once it is over."""
    for until, users, rate in stages:
        if t < until:
            return users, rate
    return None
