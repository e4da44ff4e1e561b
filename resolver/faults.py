"""The fault state of one host process: which of its nodes misbehave, how, until when.

Pure: time comes from the injected ``clock`` (``resolver.clock.Clock`` or any callable
returning seconds), randomness from the injected ``rng`` (``random.Random(seed)``), so a run
with the same seed, clock and requests fails the same requests.

Kinds (``KINDS``), each set on one node (``Fault.node``):

- ``down``: the node stops answering: HTTP requests and RPC calls hang (the client times out).
- ``refuse``: its listening sockets are closed (connections refused); reopened on clear.
- ``slow``: every HTTP request and RPC call waits ``delay`` s, plus up to ``jitter`` s (uniform).
- ``errors``: a share ``rate`` of HTTP requests answer 503 (Handle-shaped) and of RPC calls
  an error.
- ``partition``: RPC between ``node`` and ``peer`` fails, both ways (``blocked``).

Invariants: at most one fault of a kind per node (per peer for ``partition``; setting it again
replaces it); a fault whose ``expires`` has passed is gone for every reader; ``version``
grows on every change (set, clear, expiry noticed), so appliers know when to look again.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass
from typing import Callable

KINDS = ("down", "refuse", "slow", "errors", "partition")
_DURATION = re.compile(r"^\s*(-?(?:\d+(?:\.\d*)?|\.\d+))\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class FaultError(ValueError):
    """A fault spec that cannot be set (the message says what is wrong)."""


def parse_duration(text: str | float | int) -> float:
    """``"200ms"`` / ``"1.5s"`` / ``"2m"`` / ``"1h"`` / a number of seconds -> seconds (finite,
    >= 0): the one reading of a duration (faults, fault plans, ``idsim load --time``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text)) if isinstance(text, str) else None
        if not m:
            raise FaultError(f"not a duration: {text!r} (e.g. 200ms, 1.5s, 2m, 1h)")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if not 0 <= seconds < math.inf:
        raise FaultError(f"not a duration: {text!r} (must be finite and not negative)")
    return seconds


@dataclass(frozen=True, slots=True)
class Fault:
    """One active fault. ``delay``/``jitter`` (s) for slow, ``rate`` for errors, ``peer`` for
    partition; ``expires``: the clock's time it ends (None: until cleared)."""
    kind: str
    node: str
    delay: float = 0.0
    jitter: float = 0.0
    rate: float = 0.0
    peer: str = ""
    expires: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.node, self.peer

    def touches(self, node: str) -> bool:
        return node in (self.node, self.peer)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items()
                if v not in (None, "", 0.0) or k in ("kind", "node")}


def fault_from(spec: dict, now: float) -> Fault:
    """A ``Fault`` from a JSON spec: ``{"kind", "node", "delay", "jitter", "rate", "peer",
    "duration"}`` (durations as ``parse_duration`` reads them; ``duration``: ends that long
    after ``now``). ``FaultError`` names the first thing wrong."""
    if not isinstance(spec, dict):
        raise FaultError('a fault is an object: {"kind": "down", "node": "88.118"}')
    kind, node = spec.get("kind"), spec.get("node")
    if kind not in KINDS:
        raise FaultError(f"unknown fault kind {kind!r}: one of {', '.join(KINDS)}")
    if not isinstance(node, str) or not node:
        raise FaultError("a fault names its node: \"node\": \"88.118\"")
    unknown = set(spec) - {"kind", "node", "delay", "jitter", "rate", "peer", "duration"}
    if unknown:
        raise FaultError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
    delay = parse_duration(spec.get("delay", 0))
    jitter = parse_duration(spec.get("jitter", 0))
    if kind == "slow" and delay + jitter <= 0:
        raise FaultError("slow needs a delay: e.g. 200ms")
    rate = spec.get("rate", 0.0)
    if kind == "errors" and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not 0 < rate <= 1):
        raise FaultError(f"errors needs a rate in (0, 1]: got {rate!r}")
    peer = spec.get("peer", "")
    if kind == "partition" and (not isinstance(peer, str) or not peer or peer == node):
        raise FaultError("partition needs two different nodes: partition A B")
    duration = spec.get("duration")
    expires = None if duration is None else now + parse_duration(duration)
    return Fault(kind, node, delay if kind == "slow" else 0.0,
                 jitter if kind == "slow" else 0.0, float(rate) if kind == "errors" else 0.0,
                 peer if kind == "partition" else "", expires)


class FaultState:
    """The faults active in one process (see the module docstring)."""

    def __init__(self, clock: Callable[[], float], rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.version = 0
        self._faults: dict[tuple[str, str, str], Fault] = {}

    # ------------------------------------------------------------------ change
    def set(self, fault: Fault) -> Fault:
        self._faults[fault.key] = fault
        self.version += 1
        return fault

    def clear(self, node: str | None = None, kind: str | None = None) -> list[Fault]:
        """Remove every fault (of ``node``, or touching it for partitions; of ``kind``);
        the ones removed."""
        gone = [f for f in self._faults.values()
                if (node is None or f.touches(node)) and (kind is None or f.kind == kind)]
        for f in gone:
            del self._faults[f.key]
        if gone:
            self.version += 1
        return gone

    def _prune(self) -> None:
        now = self.clock()
        old = [k for k, f in self._faults.items() if f.expires is not None and f.expires <= now]
        for k in old:
            del self._faults[k]
        if old:
            self.version += 1

    # ------------------------------------------------------------------ read
    def active(self) -> list[Fault]:
        """Every live fault, in a stable order (node, kind, peer)."""
        self._prune()
        return sorted(self._faults.values(), key=lambda f: (f.node, f.kind, f.peer))

    def of(self, node: str) -> dict[str, Fault]:
        """The live faults touching ``node``, by kind (one partition, if several)."""
        return {f.kind: f for f in self.active() if f.touches(node)}

    def next_expiry(self) -> float | None:
        """When the next fault ends (None: none will by itself)."""
        ends = [f.expires for f in self._faults.values() if f.expires is not None]
        return min(ends) if ends else None

    def blocked(self, src: str, dst: str) -> bool:
        """Whether RPC from ``src`` to ``dst`` is cut by a partition (either way round)."""
        if not self._faults:
            return False
        self._prune()
        return ("partition", src, dst) in self._faults or ("partition", dst, src) in self._faults

    def is_down(self, node: str) -> bool:
        return "down" in self.of(node)

    def delay(self, node: str) -> float:
        """Seconds a request to ``node`` waits now (0: not slow); jitter from the RNG."""
        f = self.of(node).get("slow")
        if f is None:
            return 0.0
        return f.delay + (self.rng.uniform(0.0, f.jitter) if f.jitter else 0.0)

    def fails(self, node: str) -> bool:
        """Whether this request to ``node`` is one of its injected errors (seeded RNG)."""
        f = self.of(node).get("errors")
        return f is not None and self.rng.random() < f.rate
