"""The load generator's config sections (``[openmodel]``, ``[capacity]``, ``[day]``): defaults
of ``idsim load --rate``, ``idsim capacity`` and ``idsim load --scenario day``. They layer with
the nodes' sections in one config (``resolver.config``, which holds them in ``SECTIONS``)."""
from __future__ import annotations

from dataclasses import dataclass


# open-model load and capacity search (loadtest.openmodel, loadtest.capacity)
@dataclass(frozen=True, slots=True)
class OpenModelConfig:
    """Open-model load (``idsim load --rate``, ``loadtest.openmodel``)."""
    late_after: float = 0.01              # s after its intended time a start counts as late
    max_lag: float = 2.0                  # s behind schedule a start is dropped, not sent
    warn_share: float = 0.01              # share of late or dropped starts that gets a warning
    seed: int = 1                         # seed of the arrival schedule (process i: seed + i)


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """``idsim capacity`` (``loadtest.capacity``): a resperf-like stepped search."""
    start_rate: float = 250.0             # req/s of the first step
    step_rate: float = 250.0              # req/s added at each step
    max_rate: float = 20000.0             # req/s where the search stops even if all held
    step_seconds: float = 5.0             # s each step runs
    max_error_ratio: float = 0.01         # failed (or dropped) share of starts a step may have
    per_process: float = 4000.0           # req/s one Locust process is given before another


# the national-day load scenario (loadtest.day, idsim load --scenario day)
@dataclass(frozen=True, slots=True)
class DayConfig:
    """A day of national traffic played compressed (``loadtest.day``)."""
    national_daily: int = 150_000_000     # resolutions a day in China's network (early 2024)
    share: float = 0.002                  # this network's share: 300k a day, 208 req/s mean
                                          # (~430 at the 10 am peak) at --compress 60
    compress: float = 60.0                # the day plays in 86400/compress s, same volume
    zipf_s: float = 1.1                   # Zipf exponent of identifiers within an enterprise
    enterprise_s: float = 1.0             # Zipf exponent of enterprises (by size) in an industry
    unknown_share: float = 0.05           # share of resolves for identifiers never registered
    register_share: float = 0.01          # share of requests that register an identifier
