"""A national day of identifier traffic (``idsim load --scenario day``): its shape, what it asks
for, and a summary with one row per simulated hour.

Volume: China's identifier network resolved about 150 million identifiers a day in early 2024
(the figure issue 13 gives; ``DayConfig.national_daily``); this network takes ``share`` of it.

Shape (an ASSUMPTION, not a measurement of this network): ``HOURLY_WEIGHTS``, a two-peak
business day of industrial traffic: a trough at 4 am, a morning peak at 10 am, a dip over
China's long lunch break (12:00–13:30), an afternoon peak at 3 pm and a slow evening decline
(evening shifts, logistics). The rate is constant within each simulated hour, so hour h carries
exactly ``daily × weight[h] / sum(weights)`` requests in expectation.

Compression: ``compress`` C plays the simulated day in 86400/C wall seconds with the SAME daily
volume, so every rate is C times the real-time one (``DayShape.rate_at``). What keeps a
compressed day runnable here is ``share``: its default 0.2 % (300k a day) gives 208 req/s mean
and ~430 at the peak at C = 60, within one Locust process and a 2-core box.

What is asked for (``Picker``): an industry by ``INDUSTRY_WEIGHTS`` (renormalised over the
industries present), an enterprise of that industry by Zipf over its enterprises ranked by size
(exponent ``enterprise_s``), an ordinal in that enterprise by Zipf (exponent ``zipf_s``,
Hörmann–Derflinger rejection-inversion ``Zipf``: no table) spread over its product lines by a
stride permutation, turned into its suffix by the population's codec
(``resolver.population.EnterprisePopulation.suffix``). A share ``unknown_share`` of resolves
asks for product-code-shaped suffixes just past the enterprise's count (batches not registered
yet: they decode to "not found", 404 is the right answer); ``register_share`` of requests
register a new identifier under the picked enterprise. Memory: what is kept is per enterprise (a
codec and a sampler, made when first picked; the codec caches its product lines' codes, one per
47,000 identifiers, at most 4,096), never per identifier, whatever the number of draws.

Pure: no Locust, the RNG is a parameter; the one I/O is ``read`` (the records' files).
"""
from __future__ import annotations

import bisect
import math
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from hdrh.histogram import HdrHistogram

from loadtest.phases import DIGITS, HIGHEST_US, LOWEST_US
from loadtest.workload import _stride  # the rank → ordinal permutation the closed model uses
from resolver.population import CAPACITY, EnterprisePopulation
from resolver.templates import Template

DAY = 86_400.0
HOURS = 24
# relative requests per hour of the day, 0:00 .. 23:00 (assumption: see the module docstring)
HOURLY_WEIGHTS = (1.6, 1.2, 1.0, 0.9, 0.8, 1.0, 1.7, 3.0, 5.3, 7.0, 7.8, 6.9,
                  4.6, 5.8, 7.2, 7.6, 6.8, 5.2, 3.7, 3.1, 2.9, 2.6, 2.1, 1.7)
# relative resolves per enterprise-industry (assumption): sectors whose identifiers label
# parts and products moving through supply chains resolve most; any other industry: 1
INDUSTRY_WEIGHTS = {"electronics": 3.0, "home-appliances": 3.0, "automotive": 3.0,
                    "high-end-equipment": 2.0, "new-energy": 2.0, "agri-food": 2.0,
                    "biomedicine": 2.0, "cold-chain": 2.0, "petrochemicals": 1.5,
                    "advanced-materials": 1.5, "light-textiles": 1.5}
RESOLVE, UNKNOWN, REGISTER = 0, 1, 2  # kinds of request
UNKNOWN_SPAN = 47_000  # unknown ordinals: count .. count + one product line's worth


def hour_shares(weights: Sequence[float] = HOURLY_WEIGHTS) -> list[float]:
    """Each hour's share of the day's requests (sums to 1)."""
    if len(weights) != HOURS or min(weights) < 0 or not sum(weights) > 0:
        raise ValueError("a diurnal curve is 24 non-negative weights, not all zero")
    total = sum(weights)
    return [w / total for w in weights]


@dataclass(frozen=True)
class DayShape:
    """The day's request rate (m1's ``RateShape``: ``rate_at(t)`` req/s at t wall seconds from
    the start, ``duration``), all requests (resolves, unknowns and registrations) together."""
    daily: float                  # requests in the simulated day (national figure × share)
    compress: float = 60.0        # simulated seconds per wall second
    weights: tuple = HOURLY_WEIGHTS

    def __post_init__(self) -> None:
        if not self.daily > 0 or not self.compress > 0:
            raise ValueError("a day needs a positive volume and compression")
        object.__setattr__(self, "_shares", hour_shares(self.weights))

    @classmethod
    def of(cls, national_daily: float, share: float, compress: float) -> "DayShape":
        if not 0 < share <= 1:
            raise ValueError(f"--share is a fraction in (0, 1], got {share}")
        return cls(national_daily * share, compress)

    @property
    def duration(self) -> float:
        return DAY / self.compress

    @property
    def hour_seconds(self) -> float:
        """Wall seconds one simulated hour lasts."""
        return 3600.0 / self.compress

    def expected(self, hour: int) -> float:
        """Requests simulated hour ``hour`` carries in expectation."""
        return self.daily * self._shares[hour]

    def rate_at(self, t: float) -> float:
        if not 0 <= t < self.duration:
            return 0.0
        return self.expected(min(HOURS - 1, int(t / self.hour_seconds))) / self.hour_seconds

    def peak_rate(self) -> float:
        return max(self.expected(h) for h in range(HOURS)) / self.hour_seconds


def starts(shape: DayShape, rng: random.Random) -> Iterator[float]:
    """Intended start times (wall s from the start): a Poisson process at ``shape.rate_at``,
    exact for a rate constant within each hour (memoryless: a gap crossing an hour's end is
    redrawn at the next hour's rate). A stand-in for ``loadtest.openmodel.schedule``."""
    t, step = 0.0, shape.hour_seconds
    while t < shape.duration:
        rate = shape.rate_at(t)
        end = min(shape.duration, (math.floor(t / step + 1e-12) + 1) * step)
        gap = rng.expovariate(rate) if rate > 0 else math.inf
        if t + gap >= end:
            t = end
            continue
        t += gap
        yield t


class Zipf:
    """Ranks 1..n with P(k) ∝ k^-s (s > 0), by Hörmann & Derflinger's rejection-inversion
    ("Rejection-inversion to generate variates from monotone discrete distributions", ACM
    TOMACS 6(3), 1996; as in Apache Commons RNG): O(1) memory and expected O(1) time, any n."""

    __slots__ = ("n", "s", "_h1", "_hn", "_c")

    def __init__(self, n: int, s: float) -> None:
        if n < 1 or not s > 0:
            raise ValueError("Zipf needs n >= 1 and an exponent > 0")
        self.n, self.s = n, s
        self._h1 = self._big_h(1.5) - 1.0
        self._hn = self._big_h(n + 0.5)
        self._c = 2.0 - self._big_h_inv(self._big_h(2.5) - self._h(2.0))

    def _h(self, x: float) -> float:
        return math.exp(-self.s * math.log(x))

    def _big_h(self, x: float) -> float:
        log_x = math.log(x)
        t = (1.0 - self.s) * log_x
        return (math.expm1(t) / t if abs(t) > 1e-8 else 1 + t / 2 * (1 + t / 3)) * log_x

    def _big_h_inv(self, x: float) -> float:
        t = max(-1.0, x * (1.0 - self.s))
        return math.exp((math.log1p(t) / t if abs(t) > 1e-8 else 1 - t / 2 * (1 - 2 * t / 3))
                        * x)

    def sample(self, rng: random.Random) -> int:
        while True:
            u = self._hn + rng.random() * (self._h1 - self._hn)
            x = self._big_h_inv(u)
            k = min(self.n, max(1, int(x + 0.5)))
            if k - x <= self._c or u >= self._big_h(k + 0.5) - self._h(k):
                return k


@dataclass(frozen=True)
class Member:
    """What the picker knows of one enterprise."""
    prefix: str
    industry: str
    count: int                    # identifiers in its synthetic population
    template: Template


@dataclass(frozen=True)
class Pick:
    kind: int                     # RESOLVE, UNKNOWN or REGISTER
    prefix: str
    suffix: str                   # for REGISTER: empty (the caller makes a fresh one)


class Picker:
    """Draws the day's requests over a synthetic population (see the module docstring)."""

    def __init__(self, members: Iterable[Member], seed: int, *, zipf_s: float = 1.1,
                 enterprise_s: float = 1.0, unknown_share: float = 0.05,
                 register_share: float = 0.01,
                 industry_weights: Mapping[str, float] = INDUSTRY_WEIGHTS) -> None:
        if not 0 <= unknown_share <= 1 or not 0 <= register_share <= 1:
            raise ValueError("unknown_share and register_share are fractions in [0, 1]")
        by_industry: dict[str, list[Member]] = {}
        for m in members:
            if m.count > 0:
                by_industry.setdefault(m.industry, []).append(m)
        if not by_industry:
            raise ValueError("the day needs a synthetic population (idsim up --population full)")
        self.industries = sorted(by_industry)
        self.weights = [industry_weights.get(i, 1.0) for i in self.industries]
        total = sum(self.weights)
        self.mix = {i: w / total for i, w in zip(self.industries, self.weights)}
        self._cum = [sum(self.weights[:k + 1]) / total for k in range(len(self.weights))]
        # per industry: its enterprises, largest first, and a Zipf over their ranks
        self._ranked = [sorted(by_industry[i], key=lambda m: (-m.count, m.prefix))
                        for i in self.industries]
        self._pick_ent = [Zipf(len(r), enterprise_s) for r in self._ranked]
        self.seed, self.zipf_s = seed, zipf_s
        self.unknown_share, self.register_share = unknown_share, register_share
        self._ent: dict[str, tuple] = {}  # prefix -> (codec, Zipf, stride): per enterprise

    def _enterprise(self, m: Member) -> tuple:
        got = self._ent.get(m.prefix)
        if got is None:  # the codec of a CAPACITY-sized population: same suffixes, and codes
            codec = EnterprisePopulation(m.prefix, CAPACITY, m.template, self.seed)
            got = self._ent[m.prefix] = (codec, Zipf(m.count, self.zipf_s), _stride(m.count))
        return got

    def enterprise(self, rng: random.Random) -> Member:
        """An enterprise: an industry by the mix, then Zipf by size within it."""
        i = min(len(self._cum) - 1, bisect.bisect_right(self._cum, rng.random()))
        return self._ranked[i][self._pick_ent[i].sample(rng) - 1]

    def ordinal(self, m: Member, rng: random.Random) -> int:
        """A registered ordinal of ``m``, Zipf-popular, popular ones spread over its lines."""
        _, zipf, step = self._enterprise(m)
        return (zipf.sample(rng) - 1) * step % m.count

    def pick(self, rng: random.Random) -> Pick:
        m = self.enterprise(rng)
        if rng.random() < self.register_share:
            return Pick(REGISTER, m.prefix, "")
        codec = self._enterprise(m)[0]
        if rng.random() < self.unknown_share:  # a code of a batch not registered (yet):
            if m.count >= CAPACITY:  # within a line past the count (no new codes cached)
                return Pick(UNKNOWN, m.prefix, f"UNKNOWN{rng.getrandbits(32):08X}")
            end = min(CAPACITY, m.count + UNKNOWN_SPAN)
            return Pick(UNKNOWN, m.prefix, codec.suffix(rng.randrange(m.count, end)))
        return Pick(RESOLVE, m.prefix, codec.suffix(self.ordinal(m, rng)))


# ------------------------------------------------------------------ the hourly summary

@dataclass
class HourRow:
    hour: int
    expected: float               # requests the model plans for this hour
    requests: int
    ok: int
    p50: float | None             # ms from the actual send; None without requests
    p99: float | None
    p99_intended: float | None    # ms from the intended start (corrected for late starts)
    registrations: int
    unknown: int
    late: int                     # started more than LATE s after their intended time

    @property
    def success(self) -> float | None:
        return self.ok / self.requests if self.requests else None

    @property
    def unknown_share(self) -> float | None:
        return self.unknown / self.requests if self.requests else None


LATE = 0.010  # s: a start this much after its intended time counts as late
RECORD = struct.Struct("<dddBB")  # intended s from the start, late s, latency ms, ok, kind


def read(directory: str | Path) -> Iterator[tuple]:
    """Every record in ``directory``'s ``day-*.bin`` files (``loadtest.day_users`` writes one
    per Locust process; a torn last record is skipped)."""
    for path in sorted(Path(directory).glob("day-*.bin")):
        with path.open("rb") as f:
            while chunk := f.read(RECORD.size * 4096):
                usable = len(chunk) - len(chunk) % RECORD.size
                yield from RECORD.iter_unpack(chunk[:usable])


def _us(ms: float) -> int:
    return min(HIGHEST_US, max(LOWEST_US, round(ms * 1000)))


def hourly(records: Iterable[tuple], shape: DayShape) -> list[HourRow]:
    """One row per simulated hour from ``(intended s, late s, latency ms, ok, kind)`` records
    (a request counts in the hour it was meant to start in). One HdrHistogram pair per hour:
    memory is bounded by 24, not by the number of requests."""
    sent = [HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS) for _ in range(HOURS)]
    corr = [HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS) for _ in range(HOURS)]
    ok, regs, unknown, late = ([0] * HOURS for _ in range(4))
    for intended, lateness, latency_ms, good, kind in records:
        h = min(HOURS - 1, max(0, int(intended / shape.hour_seconds)))
        sent[h].record_value(_us(latency_ms))
        corr[h].record_value(_us(latency_ms + max(0.0, lateness) * 1000))
        ok[h] += bool(good)
        regs[h] += kind == REGISTER
        unknown[h] += kind == UNKNOWN
        late[h] += lateness > LATE
    rows = []
    for h in range(HOURS):
        n = sent[h].get_total_count()

        def q(hist, p):
            return hist.get_value_at_percentile(p) / 1000 if n else None
        rows.append(HourRow(h, shape.expected(h), n, ok[h], q(sent[h], 50), q(sent[h], 99),
                            q(corr[h], 99), regs[h], unknown[h], late[h]))
    return rows


def table(rows: list[HourRow], shape: DayShape) -> str:
    """The hourly summary as text."""
    def f(v, spec):
        return "-" if v is None else format(v, spec)
    lines = [f"simulated day: {shape.daily:,.0f} requests in {shape.duration:,.0f} s "
             f"(×{shape.compress:g}; one hour = {shape.hour_seconds:g} s)",
             f"{'hour':<6}{'model':>9}{'requests':>10}{'success':>9}{'p50 ms':>8}{'p99 ms':>8}"
             f"{'p99 sched':>10}{'regs':>6}{'unknown':>8}{'late':>6}"]
    for r in rows:
        lines.append(f"{r.hour:02d}:00{r.expected:>9.0f}{r.requests:>10}"
                     f"{f(r.success, '.1%'):>9}{f(r.p50, '.1f'):>8}{f(r.p99, '.1f'):>8}"
                     f"{f(r.p99_intended, '.1f'):>10}{r.registrations:>6}"
                     f"{f(r.unknown_share, '.1%'):>8}{r.late:>6}")
    total = sum(r.requests for r in rows)
    lines.append(f"{'day':<6}{shape.daily:>9.0f}{total:>10}"
                 f"{f(sum(r.ok for r in rows) / total if total else None, '.1%'):>9}")
    lines.append("p99 sched: latency from the intended start (what a client on schedule saw); "
                 "late: starts > 10 ms behind schedule (every user busy)")
    return "\n".join(lines)
