"""Applying the WAN model (``resolver.wan``) where nodes talk, inside the process.

The kernel here refuses netem, so a message's modelled delay is slept on the injected clock
just before the bytes go out (``Link.before_send``: the ``src -> dst`` delay) and before an
answer is handed to the caller (``Link.before_deliver``: the ``dst -> src`` delay).
``RpcClient`` calls them around each call (and for the round trips of a new connection),
the recursive node around each write it passes on over HTTP. Notifications (the statistics
reports) are not delayed.

``blocked(src, dst)`` (faults: a partition) makes a link refuse at once: ``PeerUnavailable``.
``Links(None, …)`` (no model) makes links that only check ``blocked`` and never sleep: for
partitions with the WAN off.

Invariants: without a ``Link`` nothing here runs (the callers test ``link is None`` and do
nothing else); a link never sleeps past the ``deadline`` it is given: a message whose delay
would pass it, or that is lost for good, sleeps until the deadline and raises
``PeerUnavailable`` (as a call timing out would); each direction draws from its own
``LinkModel``, made once per (src, dst) per process (``Links``).
"""
from __future__ import annotations

from typing import Callable, Mapping

from resolver.clock import Clock
from resolver.errors import PeerUnavailable
from resolver.wan import LinkModel, WanModel

__all__ = ["HANDSHAKE_BYTES", "Link", "Links"]

HANDSHAKE_BYTES = 64  # size of a connect or handshake message, for the serialisation delay
Blocked = Callable[[str, str], bool]


class Link:
    """Both directions between ``src`` and ``dst``, as ``src`` sees them."""

    __slots__ = ("src", "dst", "clock", "out", "back", "_links")

    def __init__(self, src: str, dst: str, out: LinkModel | None, back: LinkModel | None,
                 clock: Clock,
                 links: "Links | None" = None) -> None:
        self.src, self.dst, self.clock = src, dst, clock
        self.out, self.back = out, back
        self._links = links  # where the current ``blocked`` predicate is read

    async def before_send(self, nbytes: int, deadline: float | None = None) -> None:
        """Sleep the ``src -> dst`` delay of a message of ``nbytes``."""
        await self._travel(self.out, self.src, self.dst, nbytes, deadline)

    async def before_deliver(self, nbytes: int, deadline: float | None = None) -> None:
        """Sleep the ``dst -> src`` delay of an answer of ``nbytes``."""
        await self._travel(self.back, self.dst, self.src, nbytes, deadline)

    async def round_trip(self, deadline: float | None = None) -> None:
        """One exchange of small messages (a TCP connect, a handshake step)."""
        await self.before_send(HANDSHAKE_BYTES, deadline)
        await self.before_deliver(HANDSHAKE_BYTES, deadline)

    async def _travel(self, side: LinkModel | None, a: str, b: str, nbytes: int,
                      deadline: float | None) -> None:
        blocked = self._links.blocked if self._links is not None else None
        if blocked is not None and blocked(a, b):
            raise PeerUnavailable(f"{a} cannot reach {b} (partitioned)")
        if side is None:  # no WAN model: nothing to sleep
            return
        delay = side.draw(nbytes)
        seconds = delay.ms / 1000.0
        clock = self.clock
        if deadline is not None and clock() + seconds > deadline:
            await clock.sleep(max(0.0, deadline - clock()))
            raise PeerUnavailable(f"message {a} -> {b} delayed {delay.ms:.0f} ms, past the "
                                  f"timeout ({delay.retransmits} retransmissions)")
        await clock.sleep(seconds)
        if delay.lost:
            raise PeerUnavailable(f"message {a} -> {b} lost after {delay.retransmits - 1} "
                                  "retransmissions")


class Links:
    """The links of one process, one per (src, dst), made on first use.

    ``addresses`` maps a node's RPC address to its name (what an ``RpcClient`` knows of its
    peer); ``blocked`` may be set at any time (faults plug in here)."""

    def __init__(self, model: WanModel | None, clock: Clock, addresses: Mapping[str, str],
                 blocked: Blocked | None = None) -> None:
        self.model = model
        self.clock = clock
        self.addresses = dict(addresses)
        self.blocked = blocked
        self._links: dict[tuple[str, str], Link] = {}

    def between(self, src: str, dst: str) -> Link:
        link = self._links.get((src, dst))
        if link is None:
            model = self.model
            out, back = (None, None) if model is None else (model.link(src, dst),
                                                            model.link(dst, src))
            link = self._links[(src, dst)] = Link(src, dst, out, back, self.clock, self)
        return link

    def to_address(self, src: str, addr: str) -> Link | None:
        """The link from node ``src`` to the node at RPC address ``addr`` (None: not a node
        of the topology, so not modelled)."""
        dst = self.addresses.get(addr)
        return None if dst is None else self.between(src, dst)

    def for_node(self, src: str) -> Callable[[str], Link | None]:
        """``addr -> Link`` for node ``src`` (what ``RecursiveNode(links=…)`` takes)."""
        return lambda addr: self.to_address(src, addr)
