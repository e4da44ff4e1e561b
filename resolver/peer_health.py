"""Which peer to ask next: per RPC address, consecutive failures put a peer in back-off.

The recursive node asks a prefix's primary node, then its mirrors (``Site.mirrors``), and the
top-level node, then its standbys, in the order given, choosing by health:

* a peer is *healthy* until ``peer_failures`` consecutive calls to it failed (no answer:
  ``PeerUnavailable``); it is then *in back-off* for ``peer_backoff`` seconds, doubled for
  every further failure, at most ``peer_backoff_max`` (``config.CacheConfig``);
* a peer in back-off is skipped, unless every peer of the list is in back-off: then they are
  tried anyway, in order (the last resort beats a certain failure);
* once its window has passed, one call at a time may probe it (``next`` claims the probe;
  other callers keep skipping it until the probe's result is in);
* any answer (``ok``, an error the peer itself answered included) resets it to healthy.

Pure logic: no I/O, the clock is given; one event loop (no locks). Every call that ``next``
handed out must be followed by ``ok``, ``failed`` or ``release`` for that peer, so that a
claimed probe is never left pending. Peers never seen are healthy and cost nothing; the table
holds only peers that failed since their last answer (bounded by the topology's addresses).
"""
from __future__ import annotations

from typing import Callable, Collection, Sequence

from resolver.config import CacheConfig

__all__ = ["PeerHealth"]


class _State:
    __slots__ = ("failures", "until", "probing")

    def __init__(self) -> None:
        self.failures = 0       # consecutive failed calls
        self.until = 0.0        # in back-off before this time (when failures >= threshold)
        self.probing = False    # a probe after the window is in flight


class PeerHealth:
    """Health of the peers one node calls (see the module's doc)."""

    def __init__(self, config: CacheConfig, clock: Callable[[], float]) -> None:
        self.threshold = max(1, config.peer_failures)
        self.backoff = config.peer_backoff
        self.backoff_max = config.peer_backoff_max
        self.clock = clock
        self._peers: dict[str, _State] = {}

    def in_backoff(self, addr: str) -> bool:
        """Whether ``addr`` is skipped now (in its window, or its probe is in flight)."""
        s = self._peers.get(addr)
        if s is None or s.failures < self.threshold:
            return False
        return s.probing or self.clock() < s.until

    def next(self, addrs: Sequence[str], tried: Collection[str] = ()) -> str | None:
        """The peer of ``addrs`` to call now, not one of ``tried``; None: none is left.

        The first healthy one, or the first whose back-off has passed (its probe is claimed);
        when every one of ``addrs`` is in back-off, the first not tried."""
        rest = [a for a in addrs if a not in tried]
        for addr in rest:
            s = self._peers.get(addr)
            if s is None or s.failures < self.threshold:
                return addr
            if not s.probing and self.clock() >= s.until:
                s.probing = True
                return addr
        if rest and all(self.in_backoff(a) for a in addrs):
            return rest[0]
        return None

    def ok(self, addr: str) -> None:
        """``addr`` answered: healthy again."""
        self._peers.pop(addr, None)

    def failed(self, addr: str) -> None:
        """A call to ``addr`` got no answer."""
        s = self._peers.get(addr)
        if s is None:
            s = self._peers[addr] = _State()
        s.failures += 1
        s.probing = False
        if s.failures >= self.threshold:
            window = self.backoff * 2.0 ** min(s.failures - self.threshold, 62)
            s.until = self.clock() + min(window, self.backoff_max)

    def release(self, addr: str) -> None:
        """A call to ``addr`` ended without telling whether it is up (cancelled, or an answer
        that could not be read): a claimed probe may be made again by the next caller."""
        s = self._peers.get(addr)
        if s is not None:
            s.probing = False

    def state(self, addr: str) -> tuple[int, float]:
        """``(consecutive failures, end of the back-off window)`` of ``addr`` (for tests and
        status pages)."""
        s = self._peers.get(addr)
        return (0, 0.0) if s is None else (s.failures, s.until)
