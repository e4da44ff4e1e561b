"""Fault plans: a TOML timeline of faults, its schedule, its phases, and a runner.

A plan is a list of ``[[fault]]`` tables::

    [[fault]]
    at = "30s"          # when, from the start of the plan (s, ms, m, h; a number is seconds)
    for = "20s"         # how long; then it is cleared
    kind = "down"       # down, refuse, slow, errors, partition, kill, restart
    node = "88.118"     # partition names two nodes instead: a = "…", b = "…"

``slow`` takes ``delay`` (and optionally ``jitter``), ``errors`` a ``rate`` in (0, 1].
``down``, ``refuse``, ``slow``, ``errors`` and ``partition`` need ``for``; ``kill`` may have
one (the node is restarted at its end); ``restart`` happens at once and has none.

Invariants:
- Parsing is pure (no I/O but ``load_plan``'s read); a bad plan raises ``PlanError`` whose
  message names the entry (``fault 2 (slow 88.201)``) and what is wrong with it.
- The schedule applies each fault at ``at`` and clears it at ``at + for``; at equal times a
  clear comes before an apply. Phases cut the timeline at every event time, so overlapping
  faults give one phase per distinct set of active faults.
- ``PlanRun`` never applies an event before its time, and ``stop`` clears every fault it
  applied that is still in effect (a node's clear clears all its faults, so the others still
  active on that node are applied again). The applier is injected (``Applier``); the real one
  is ``topology.plan_applier.ClusterApplier``. ``run_plan`` sleeps on an injected clock.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from resolver.clock import Clock
from resolver.faults import parse_duration

KINDS = ("down", "refuse", "slow", "errors", "partition", "kill", "restart")
LASTING = ("down", "refuse", "slow", "errors", "partition")  # these need ``for``
KEYS = {"at", "for", "kind", "node", "a", "b", "delay", "jitter", "rate"}
FIELDS = {"down": {"node"}, "refuse": {"node"}, "slow": {"node", "delay", "jitter"},
          "errors": {"node", "rate"}, "partition": {"a", "b"}, "kill": {"node"},
          "restart": {"node"}}


class PlanError(ValueError):
    """A plan that cannot run; the message names the entry."""


class Applier(Protocol):
    def apply(self, spec: dict) -> Any: ...
    def clear(self, node: str) -> Any: ...


def parse_seconds(value: Any) -> float:
    """A duration in seconds, as ``resolver.faults.parse_duration`` reads it (ValueError)."""
    return parse_duration(value)


@dataclass(frozen=True)
class Fault:
    index: int                  # 1-based position in the plan
    kind: str
    at: float
    duration: float | None      # None: happens at once (restart, kill without ``for``)
    node: str = ""
    a: str = ""
    b: str = ""
    delay: float = 0.0
    jitter: float = 0.0
    rate: float = 0.0

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.a, self.b) if self.kind == "partition" else (self.node,)

    @property
    def end(self) -> float:
        return self.at + (self.duration or 0.0)

    @property
    def where(self) -> str:
        """``fault 2 (slow 88.201)``: the entry, as errors name it."""
        return f"fault {self.index} ({self.kind} {'|'.join(self.nodes)})"

    @property
    def label(self) -> str:
        """``slow 88.201 200ms``: what the fault is, for tables and messages."""
        if self.kind == "partition":
            return f"partition {self.a}|{self.b}"
        extra = {"slow": f" {self.delay * 1000:g}ms", "errors": f" {self.rate:g}"}
        return f"{self.kind} {self.node}{extra.get(self.kind, '')}"

    def spec(self) -> dict:
        """What the applier is given (``topology.fault_control.apply``): ``{"kind", "node"}``
        plus the kind's own fields (seconds for delay and jitter; partition: ``node`` is ``a``
        and ``peer`` is ``b``)."""
        if self.kind == "partition":
            return {"kind": "partition", "node": self.a, "peer": self.b}
        spec: dict = {"kind": self.kind, "node": self.node}
        if self.kind == "slow":
            spec.update(delay=self.delay, jitter=self.jitter)
        elif self.kind == "errors":
            spec["rate"] = self.rate
        return spec


@dataclass(frozen=True)
class Plan:
    faults: tuple[Fault, ...]
    name: str = ""

    @property
    def end(self) -> float:
        """When the last event happens (s from the start)."""
        return max((f.end for f in self.faults), default=0.0)


@dataclass(frozen=True)
class Event:
    t: float                    # s from the plan's start
    action: str                 # "apply" or "clear"
    fault: Fault

    def describe(self) -> str:
        return f"{self.action} {self.fault.label} (fault {self.fault.index})"


@dataclass(frozen=True)
class Phase:
    name: str                   # before, during <faults>, between, after
    start: float                # s from the plan's start
    end: float                  # math.inf for the last phase


def _entry(i: int, raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("kind"), str):
        who = raw.get("node") or "|".join(str(raw[k]) for k in ("a", "b") if k in raw)
        return f"fault {i} ({raw['kind']} {who})" if who else f"fault {i} ({raw['kind']})"
    return f"fault {i}"


def _fault(i: int, raw: Any) -> Fault:
    where = _entry(i, raw)
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: each [[fault]] is a table")
    unknown = set(raw) - KEYS
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(sorted(KEYS))})")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise PlanError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    extra = set(raw) - {"at", "for", "kind"} - FIELDS[kind]
    if extra:
        raise PlanError(f"{where}: {kind} takes no {', '.join(sorted(extra))}")
    try:
        at = parse_seconds(raw["at"]) if "at" in raw else None
        duration = parse_seconds(raw["for"]) if "for" in raw else None
        delay = parse_seconds(raw.get("delay", 0))
        jitter = parse_seconds(raw.get("jitter", 0))
    except ValueError as exc:
        raise PlanError(f"{where}: {exc}") from None
    if at is None:
        raise PlanError(f"{where}: missing at (when it starts, e.g. at = \"30s\")")
    if kind in LASTING and not duration:
        raise PlanError(f"{where}: {kind} needs a positive for (how long, e.g. for = \"20s\")")
    if kind == "restart" and duration is not None:
        raise PlanError(f"{where}: restart happens at once and takes no for")
    if kind == "kill" and duration == 0:
        raise PlanError(f"{where}: kill's for must be positive (or left out)")
    for key in FIELDS[kind] & {"node", "a", "b"}:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise PlanError(f"{where}: {key} must name a node, e.g. {key} = \"88.118\"")
    if kind == "partition" and raw["a"] == raw["b"]:
        raise PlanError(f"{where}: a partition is between two different nodes")
    if kind == "slow" and not delay:
        raise PlanError(f"{where}: slow needs a positive delay, e.g. delay = \"200ms\"")
    rate = raw.get("rate", 0.0)
    if kind == "errors" and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not 0 < rate <= 1):
        raise PlanError(f"{where}: rate must be a share in (0, 1], e.g. rate = 0.1")
    return Fault(i, kind, at, duration, node=raw.get("node", ""), a=raw.get("a", ""),
                 b=raw.get("b", ""), delay=delay, jitter=jitter, rate=float(rate))


def parse_plan(text: str, source: str = "plan") -> Plan:
    """A plan from TOML text; PlanError (naming the entry) when it is not a valid one."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not TOML: {exc}") from None
    unknown = set(doc) - {"fault", "name", "description"}
    if unknown:
        raise PlanError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    entries = doc.get("fault")
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"{source}: no faults (write [[fault]] tables)")
    return Plan(tuple(_fault(i, raw) for i, raw in enumerate(entries, 1)),
                name=str(doc.get("name", "")))


def load_plan(path: str | Path) -> Plan:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PlanError(f"cannot read the plan {path}: {exc.strerror or exc}") from None
    return parse_plan(text, source=str(path))


def check_nodes(plan: Plan, names: set[str]) -> None:
    """PlanError naming the first fault whose node the cluster does not have."""
    for f in plan.faults:
        for node in f.nodes:
            if node not in names:
                raise PlanError(f"{f.where}: no node {node!r} in the cluster "
                                f"(its nodes: {', '.join(sorted(names))})")


def schedule(plan: Plan) -> list[Event]:
    """Every apply and clear in time order; at equal times clears first, then by entry."""
    events = [Event(f.at, "apply", f) for f in plan.faults]
    events += [Event(f.end, "clear", f) for f in plan.faults if f.duration]
    return sorted(events, key=lambda e: (e.t, e.action == "apply", e.fault.index))


def phases(plan: Plan) -> list[Phase]:
    """The timeline cut at every event time: before, during (the faults active), between,
    after. The last phase runs to infinity; empty phases are left out."""
    cuts = sorted({0.0, *(e.t for e in schedule(plan))})
    first, last = min(f.at for f in plan.faults), plan.end
    out = []
    for start, end in zip(cuts, [*cuts[1:], math.inf]):
        active = [f for f in plan.faults if f.duration and f.at <= start < f.end]
        if active:
            name = "during " + " + ".join(f.label for f in active)
        elif start < first:
            name = "before"
        elif start >= last:
            name = "after"
        else:
            name = "between"
        if end > start:
            out.append(Phase(name, start, end))
    return out


def phase_index(cut: list[Phase], t: float) -> int | None:
    """Which phase ``t`` (s from the plan's start) falls in; None before the start."""
    for i, p in enumerate(cut):
        if p.start <= t < p.end:
            return i
    return None


@dataclass
class Done:
    """One event as run: when (s from the start), and the error if the applier failed."""
    t: float
    event: Event
    error: str | None = None

    def line(self) -> str:
        """``  30.0 s  apply down 88.118 (fault 1)``, and the error when it failed."""
        text = f"{self.t:6.1f} s  {self.event.describe()}"
        return text if self.error is None else f"{text}: FAILED: {self.error}"


@dataclass
class PlanRun:
    """A plan stepped by its caller: ``start(now)``, then ``run_due(now)`` whenever
    ``next_due()`` has come, and ``stop()`` at the end or when interrupted."""
    plan: Plan
    applier: Applier
    on_event: Callable[[Done], None] | None = None
    t0: float | None = None
    events: list[Event] = field(init=False)
    active: list[Fault] = field(default_factory=list)   # applied and in effect, in order
    done: list[Done] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = schedule(self.plan)

    def start(self, now: float) -> None:
        self.t0 = now

    def next_due(self) -> float | None:
        """The absolute time of the next event, None when none is left."""
        return None if not self.events else self.t0 + self.events[0].t

    def run_due(self, now: float) -> list[Done]:
        ran = []
        while self.events and self.t0 + self.events[0].t <= now:
            event = self.events.pop(0)
            ran.append(self._run(event, now))
        return ran

    def stop(self, now: float) -> list[Done]:
        """Clear every fault still in effect (latest first); nothing more is scheduled."""
        self.events = []
        return [self._run(Event(now - self.t0, "clear", f), now, reapply=False)
                for f in reversed(list(self.active))]

    def _run(self, event: Event, now: float, reapply: bool = True) -> Done:
        f = event.fault
        try:
            if event.action == "apply":
                self.applier.apply(f.spec())
                if f.duration:
                    self.active.append(f)
            else:
                if f in self.active:
                    self.active.remove(f)
                if f.kind == "kill":
                    self.applier.apply({"kind": "restart", "node": f.node})
                else:
                    for node in f.nodes:
                        self.applier.clear(node)
                    # a node's clear clears all its faults: put back those still active there
                    for other in list(self.active) if reapply else []:
                        if other.kind != "kill" and set(other.nodes) & set(f.nodes):
                            self.applier.apply(other.spec())
            error = None
        except Exception as exc:  # noqa: BLE001 - reported, and the plan goes on
            error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
        done = Done(now - self.t0, event, error)
        self.done.append(done)
        if self.on_event is not None:
            self.on_event(done)
        return done


async def run_plan(plan: Plan, applier: Applier, clock: Clock,
                   on_event: Callable[[Done], None] | None = None) -> list[Done]:
    """Apply the plan's events at their times on ``clock``; when cancelled (Ctrl-C) or when
    it ends, clear whatever is still in effect. The events run, in order."""
    run = PlanRun(plan, applier, on_event)
    run.start(clock())
    try:
        while (due := run.next_due()) is not None:
            wait = due - clock()
            if wait > 0:
                await clock.sleep(wait)
            run.run_due(clock())
    finally:
        run.stop(clock())
    return run.done
