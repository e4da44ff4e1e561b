"""Open-model load: requests start on a schedule of intended times, not when the last one ended.

A closed-loop load (each user waits for its answer before sending again) sends a slow node
less work and measures only the requests it managed to send: coordinated omission. Here a
rate shape (``RateShape``: ``rate_at(t)`` requests/s at t s from the start, and ``duration``)
becomes a schedule of intended start times (``schedule``); users take the next start from a
shared ``Pacer``, wait for it, send, and ``OpenStats`` records each latency twice:

- corrected: from the intended start to the answer (what a client arriving on time saw);
- uncorrected: from the actual send to the answer (what a closed-loop tool reports).

Arrivals are Poisson (exponential gaps): independent clients arrive memorylessly, and the
superposition of N independent Poisson streams at rate r/N is exactly Poisson at rate r, so N
Locust processes each taking 1/N of the shape (``Share``, its own seed) together make the
whole stream. Evenly spaced starts would phase-lock the processes and hide bursts. A
time-varying rate is followed by time rescaling on a grid of ``GRID`` s (the rate is taken
as constant within a cell: exact for step shapes whose steps fall on the grid).

Invariants: ``schedule`` is deterministic for a seeded RNG, yields increasing times in
``[0, duration)``; every intended start is counted once: sent (``record``), or dropped
(skipped by the pacer when more than ``max_lag`` behind, or never taken before the end);
percentiles come from HdrHistograms (3 significant digits), so a p99 is never above the max.
Pure: no I/O, no Locust, the clock is the caller's (times are plain floats).
"""
from __future__ import annotations

import base64
import math
import random
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from hdrh.histogram import HdrHistogram

from resolver.config import OpenModelConfig

LEAD = 0.3  # s from a Locust process's test start to its first intended start (users spawned)
_CFG = OpenModelConfig()  # defaults of late_after, max_lag, warn_share
GRID = 0.01  # s: a time-varying rate is taken as constant within each cell of this length
LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3


class RateShape(Protocol):
    duration: float

    def rate_at(self, t: float) -> float: ...


@dataclass(frozen=True)
class Steps:
    """A piecewise-constant rate: ``steps`` is ``((seconds, rate), ...)`` played in order."""
    steps: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a rate shape needs at least one step")
        for seconds, rate in self.steps:
            if not (seconds > 0 and math.isfinite(seconds)) or not (rate >= 0 and
                                                                     math.isfinite(rate)):
                raise ValueError(f"a step needs a positive duration and a rate >= 0, got "
                                 f"{rate:g}/s for {seconds:g} s")

    @property
    def duration(self) -> float:
        return sum(s for s, _ in self.steps)

    def rate_at(self, t: float) -> float:
        end = 0.0
        for seconds, rate in self.steps:
            end += seconds
            if t < end:
                return rate
        return 0.0

    def spec(self) -> str:
        """The text ``parse_rate`` reads back: ``1000@10,2000@10``."""
        return ",".join(f"{rate:g}@{seconds:g}" for seconds, rate in self.steps)

    def describe(self) -> str:
        if len(self.steps) == 1:
            return f"{self.steps[0][1]:g} req/s for {self.steps[0][0]:g} s"
        return " then ".join(f"{r:g}/s for {s:g} s" for s, r in self.steps)


def constant(rate: float, seconds: float) -> Steps:
    return Steps(((seconds, rate),))


@dataclass(frozen=True)
class Share:
    """``fraction`` of another shape (one of N load processes takes 1/N of the rate)."""
    shape: RateShape
    fraction: float

    @property
    def duration(self) -> float:
        return self.shape.duration

    def rate_at(self, t: float) -> float:
        return self.shape.rate_at(t) * self.fraction


def _seconds(text: str) -> float:
    from topology.faultplan import parse_seconds
    return parse_seconds(text)


def parse_rate(text: str, seconds: float | None = None) -> Steps:
    """``5000`` (for ``seconds``), ``steps:1000,2000,3000@10s`` (each step 10 s) or
    ``1000@10s,2000@5s`` (each its own); ValueError otherwise."""
    text = text.strip()
    body = text[len("steps:"):] if text.startswith("steps:") else text
    try:
        if "@" not in body:
            if seconds is None:
                raise ValueError("a plain rate needs a duration (--time)")
            return constant(float(body), seconds)
        if body.count("@") == 1 and "," not in body.split("@")[1]:
            rates, each = body.split("@")
            step = _seconds(each)
            return Steps(tuple((step, float(r)) for r in rates.split(",")))
        return Steps(tuple((_seconds(s), float(r)) for r, s in
                           (item.split("@") for item in body.split(","))))
    except ValueError as exc:
        raise ValueError(f"not a rate or rate shape: {text!r} ({exc}); e.g. 5000, "
                         "steps:1000,2000,3000@10s or 1000@10s,2000@5s") from None


def load_shape(path) -> Steps:
    """A TOML file of ``[[step]]`` tables with ``rate`` (req/s) and ``for`` (a duration)."""
    import tomllib
    from pathlib import Path
    try:
        doc = tomllib.loads(Path(path).read_text())
        return Steps(tuple((_seconds(str(s["for"])), float(s["rate"]))
                           for s in doc.get("step", [])))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a rate shape ({exc}); it needs [[step]] tables with "
                         "rate = N and for = \"10s\"") from None


def schedule(shape: RateShape, rng: random.Random) -> Iterator[float]:
    """Intended start times (s from the start) of a Poisson stream following ``shape``."""
    t, end = 0.0, shape.duration
    need = rng.expovariate(1.0)  # unit-rate work left until the next arrival
    while t < end:
        cell_end = min(end, (math.floor(t / GRID + 1e-9) + 1) * GRID)
        rate = shape.rate_at(t)
        have = rate * (cell_end - t)
        if rate > 0 and have >= need:
            t += need / rate
            if t >= end:
                return
            yield t
            need = rng.expovariate(1.0)
        else:
            need -= have
            t = cell_end


def _hist() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def _us(seconds: float) -> int:
    return min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6)))


@dataclass
class OpenStats:
    """Corrected and uncorrected latency histograms, with late and dropped starts."""
    late_after: float = _CFG.late_after
    corrected: HdrHistogram = field(default_factory=_hist)
    uncorrected: HdrHistogram = field(default_factory=_hist)
    sent: int = 0
    failed: int = 0
    late: int = 0
    dropped: int = 0
    duration: float | None = None  # s the schedule ran (for the rate sent), when known

    def record(self, intended: float, sent: float, done: float, ok: bool = True) -> None:
        self.corrected.record_value(_us(done - intended))
        self.uncorrected.record_value(_us(done - sent))
        self.sent += 1
        self.failed += not ok
        self.late += sent - intended > self.late_after

    def add(self, other: "OpenStats") -> None:
        self.corrected.add(other.corrected)
        self.uncorrected.add(other.uncorrected)
        self.sent += other.sent
        self.failed += other.failed
        self.late += other.late
        self.dropped += other.dropped

    def to_dict(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "late": self.late,
                "dropped": self.dropped, "lateAfter": self.late_after,
                "corrected": base64.b64encode(self.corrected.encode()).decode(),
                "uncorrected": base64.b64encode(self.uncorrected.encode()).decode()}

    @classmethod
    def from_dict(cls, d: dict) -> "OpenStats":
        stats = cls(d["lateAfter"], sent=d["sent"], failed=d["failed"], late=d["late"],
                    dropped=d["dropped"])
        for name in ("corrected", "uncorrected"):
            getattr(stats, name).decode_and_add(base64.b64decode(d[name]))
        return stats

    @property
    def intended(self) -> int:
        return self.sent + self.dropped

    def ms(self, which: str, percentile: float) -> float | None:
        """A percentile (or 100: the max) of ``corrected``/``uncorrected`` in ms."""
        hist = getattr(self, which)
        if not hist.get_total_count():
            return None
        value = hist.get_max_value() if percentile >= 100 else hist.get_value_at_percentile(
            percentile)
        return min(value, hist.get_max_value()) / 1000

    def warnings(self, warn_share: float = _CFG.warn_share) -> list[str]:
        out, n = [], max(1, self.intended)
        if self.dropped / n > warn_share:
            out.append(f"WARNING: {self.dropped:,} of {self.intended:,} intended starts "
                       f"({self.dropped / n:.1%}) were dropped: every user was busy. Add "
                       "--users (or --processes); the rate asked for was not sent.")
        if self.late / n > warn_share:
            out.append(f"WARNING: {self.late:,} starts ({self.late / n:.1%}) were sent more "
                       f"than {self.late_after * 1000:.0f} ms after their intended time: "
                       "the corrected latency includes that wait, the uncorrected does not.")
        return out

    def table(self, seconds: float | None = None, warn_share: float = _CFG.warn_share
              ) -> str:
        def f(v):
            return "-" if v is None else f"{v:.1f}"
        seconds = seconds or self.duration
        rate = f"  {self.sent / seconds:,.0f} req/s sent" if seconds else ""
        lines = [f"open model: {self.intended:,} intended starts, {self.sent:,} sent "
                 f"({self.failed:,} failed), {self.late:,} late, {self.dropped:,} dropped{rate}",
                 f"{'latency':<34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
        for which, label in (("corrected", "corrected (from intended start)"),
                             ("uncorrected", "uncorrected (from actual send)")):
            lines.append(f"{label:<34}{f(self.ms(which, 50)):>9}{f(self.ms(which, 99)):>9}"
                         f"{f(self.ms(which, 100)):>9}")
        return "\n".join(lines + self.warnings(warn_share))


class Pacer:
    """Hands out intended start times (absolute: ``t0`` + schedule) to whichever user asks.

    ``take(now)`` returns the next start, skipping (as dropped) any more than ``max_lag``
    behind ``now``, or None when the schedule is over. ``finish(now)`` counts the starts due by
    ``now`` that no user took (every user was busy until the run ended) as dropped.
    """

    def __init__(self, starts: Iterator[float], t0: float, stats: OpenStats,
                 max_lag: float = _CFG.max_lag) -> None:
        self.starts, self.t0, self.stats, self.max_lag = starts, t0, stats, max_lag
        self.done = False

    def take(self, now: float) -> float | None:
        while not self.done:
            offset = next(self.starts, None)
            if offset is None:
                self.done = True
                break
            if now - (self.t0 + offset) <= self.max_lag:
                return self.t0 + offset
            self.stats.dropped += 1
        return None

    def finish(self, now: float) -> None:
        while not self.done:
            offset = next(self.starts, None)
            if offset is None or self.t0 + offset > now:
                self.done = True
                break
            self.stats.dropped += 1
