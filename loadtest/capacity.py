"""Capacity search (``idsim capacity``): raise the arrival rate step by step until it breaks.

As resperf does for DNS, the open-model rate (``loadtest.openmodel``) goes up by
``[capacity] step_rate`` from ``start_rate`` each ``step_seconds``; a step holds when its
corrected p99 (from the intended start: queueing counts) is within the SLO and its error ratio
((failed + dropped starts) / intended starts) within ``max_error_ratio``. The search stops at
the first step that does not hold (or at ``max_rate``); the capacity is the highest rate that
held. A step where the load generator itself was saturated is marked so: beyond it the
numbers measure Locust, and the capacity found is a lower bound.

Pure: the caller measures a step (``measure(rate, processes, users) -> StepResult``); no I/O
here. Sizing: enough users that Little's law (in flight = rate x latency) cannot run out of
them while the SLO holds (``users_for``), and one Locust process per ``per_process`` req/s,
at most one per core (``processes_for``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

from resolver.config import CapacityConfig


@dataclass
class StepResult:
    rate: float                   # req/s asked for
    sent_rate: float              # req/s sent
    p50: float | None             # ms, corrected
    p99: float | None             # ms, corrected (from the intended start)
    p99_uncorrected: float | None  # ms, from the actual send
    intended: int
    failed: int
    dropped: int
    late: int
    engine: str                   # "Locust, 1 process" / "Locust distributed: N workers"
    saturated: bool = False       # the load generator used ~all of its core(s)
    generator_cpu: float = 0.0    # share of a core each Locust process used
    held: bool = False
    why: str = ""                 # why it did not hold

    @property
    def error_ratio(self) -> float:
        return (self.failed + self.dropped) / self.intended if self.intended else 1.0


@dataclass
class Capacity:
    max_p99: float                # ms, the SLO
    max_error_ratio: float
    steps: list[StepResult] = field(default_factory=list)

    @property
    def held(self) -> list[StepResult]:
        return [s for s in self.steps if s.held]

    @property
    def rate(self) -> float:
        """The highest rate that held (0: none did)."""
        return max((s.rate for s in self.held), default=0.0)

    @property
    def knee(self) -> StepResult | None:
        """The first step that did not hold, or None (every step up to max_rate held)."""
        return next((s for s in self.steps if not s.held), None)

    @property
    def generator_bound(self) -> bool:
        return any(s.saturated for s in self.steps)

    def verdict(self, min_rate: float | None) -> bool:
        return min_rate is None or self.rate >= min_rate

    def to_dict(self) -> dict:
        return {"capacity": self.rate, "maxP99Ms": self.max_p99,
                "maxErrorRatio": self.max_error_ratio, "generatorBound": self.generator_bound,
                "knee": None if self.knee is None else self.knee.rate,
                "steps": [asdict(s) | {"errorRatio": s.error_ratio} for s in self.steps]}


def judge(step: StepResult, max_p99: float, max_error_ratio: float) -> StepResult:
    """Mark ``step`` held or not (with why)."""
    why = []
    if step.p99 is None or step.p99 > max_p99:
        why.append(f"p99 {'-' if step.p99 is None else f'{step.p99:.1f}'} ms > {max_p99:g} ms")
    if step.error_ratio > max_error_ratio:
        why.append(f"errors {step.error_ratio:.1%} > {max_error_ratio:.1%}")
    if why and step.saturated:
        why.append("the load generator was saturated (a lower bound)")
    step.held, step.why = not why, "; ".join(why)
    return step


def rates(config: CapacityConfig) -> list[float]:
    n = int(math.floor((config.max_rate - config.start_rate) / config.step_rate + 1e-9)) + 1
    return [config.start_rate + i * config.step_rate for i in range(max(0, n))]


def users_for(rate: float, max_p99_ms: float) -> int:
    """Users (requests in flight at most) for ``rate``: twice what Little's law needs at the
    SLO's latency, at least 10."""
    return max(10, math.ceil(2 * rate * max_p99_ms / 1000))


def processes_for(rate: float, config: CapacityConfig, cores: int) -> int:
    return max(1, min(max(1, cores), math.ceil(rate / config.per_process)))


def engine(processes: int) -> str:
    return ("Locust, 1 process" if processes <= 1 else
            f"Locust distributed (--processes {processes}: a master and {processes} workers)")


def search(measure: Callable[[float, int, int], StepResult], config: CapacityConfig,
           max_p99: float, *, cores: int, users: int | None = None,
           processes: int | None = None,
           on_step: Callable[[StepResult], None] | None = None) -> Capacity:
    """Step the rate up until a step does not hold; ``users``/``processes`` fixed if given."""
    result = Capacity(max_p99, config.max_error_ratio)
    for rate in rates(config):
        procs = processes or processes_for(rate, config, cores)
        step = judge(measure(rate, procs, users or users_for(rate, max_p99)), max_p99,
                     config.max_error_ratio)
        result.steps.append(step)
        if on_step is not None:
            on_step(step)
        if not step.held:
            break
    return result
