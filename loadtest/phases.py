"""Per-phase figures of a load run with a fault plan: requests, success rate, p50 and p99.

The Locust processes record each request as ``RECORD`` (wall-clock start time in s, latency
in ms, ok) through ``loadtest.requestlog``; ``summarise`` streams them into one
HdrHistogram per phase of the plan (``topology.faultplan.phases``), so memory is bounded by
the number of phases, not of requests. A request belongs to the phase in which it started;
its latency counts whether it succeeded or not (a timeout's wait is what a client saw), and
percentiles are exact to 0.1% (three significant digits). Imports nothing asyncio (and not
Locust): the runner reads the records in its own process.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from hdrh.histogram import HdrHistogram

from topology.faultplan import Phase, phase_index

RECORD = struct.Struct("<ddB")   # start (s since the epoch), latency (ms), ok (0/1)
LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3  # µs; ~190 KB a phase


@dataclass
class PhaseRow:
    name: str
    start: float                # s from the plan's start
    end: float                  # math.inf for the last phase
    requests: int
    ok: int
    p50: float | None           # ms; None without requests
    p99: float | None

    @property
    def success(self) -> float | None:
        return self.ok / self.requests if self.requests else None


def read(directory: str | Path) -> Iterator[tuple[float, float, bool]]:
    """Every record in ``directory``'s ``requests-*.bin`` files (a torn last one skipped)."""
    for path in sorted(Path(directory).glob("requests-*.bin")):
        with path.open("rb") as f:
            while chunk := f.read(RECORD.size * 4096):
                usable = len(chunk) - len(chunk) % RECORD.size
                for start, latency, ok in RECORD.iter_unpack(chunk[:usable]):
                    yield start, latency, bool(ok)


def summarise(records: Iterable[tuple[float, float, bool]], cut: list[Phase],
              t0: float) -> list[PhaseRow]:
    """Each phase's figures; ``t0`` is the wall-clock time the plan started (a request
    started before it counts in the first phase)."""
    hists = [HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS) for _ in cut]
    oks = [0] * len(cut)
    for start, latency_ms, ok in records:
        i = phase_index(cut, start - t0)
        i = 0 if i is None else i
        hists[i].record_value(min(HIGHEST_US, max(LOWEST_US, round(latency_ms * 1000))))
        oks[i] += bool(ok)
    rows = []
    for phase, hist, ok in zip(cut, hists, oks):
        n = hist.get_total_count()
        q = (lambda p: hist.get_value_at_percentile(p) / 1000) if n else (lambda p: None)
        rows.append(PhaseRow(phase.name, phase.start, phase.end, n, ok, q(50), q(99)))
    return rows


def _span(row: PhaseRow, run_seconds: float | None) -> str:
    end = run_seconds if math.isinf(row.end) and run_seconds is not None else row.end
    return f"{row.start:.0f}–{'end' if math.isinf(end) else f'{end:.0f}'} s"


def table(rows: list[PhaseRow], run_seconds: float | None = None) -> str:
    """The per-phase summary as text (times in s from the plan's start)."""
    width = max([len("phase"), *(len(r.name) for r in rows)]) + 2
    lines = [f"{'phase':<{width}}{'when':>12}{'requests':>10}{'success':>9}{'p50 ms':>9}"
             f"{'p99 ms':>9}"]
    for r in rows:
        ok = "-" if r.success is None else f"{r.success:.1%}"
        p50 = "-" if r.p50 is None else f"{r.p50:.1f}"
        p99 = "-" if r.p99 is None else f"{r.p99:.1f}"
        lines.append(f"{r.name:<{width}}{_span(r, run_seconds):>12}{r.requests:>10}{ok:>9}"
                     f"{p50:>9}{p99:>9}")
    return "\n".join(lines)
