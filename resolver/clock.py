"""Time, injected: every node, cache, RPC timeout and periodic task reads it from a ``Clock``.

A clock is called for the wall time in seconds (``clock()``, as ``time.time``), schedules
callbacks (``clock.call_later(delay, fn, *args)`` returns something with ``cancel()``) and
sleeps (``await clock.sleep(s)``). ``SYSTEM`` is the real one, on the running event loop.
``FakeClock`` is the one tests (and simulated timelines) use: time stands still until
``advance`` moves it, which runs every callback and wakes every sleeper that falls due, in
due-time order, so tests order events without sleeping. Invariant: a FakeClock never moves
backwards and never runs a callback before its due time.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Any, Callable, Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def __call__(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall time from ``time.time``; timers and sleeps on the running asyncio loop."""

    __slots__ = ()

    def __call__(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = SystemClock()


class _FakeTimer:
    __slots__ = ("due", "callback", "args", "cancelled")

    def __init__(self, due: float, callback: Callable[..., Any], args: tuple) -> None:
        self.due = due
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told: ``advance(seconds)`` or ``set(t)``."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = float(t)
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.t

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _FakeTimer:
        timer = _FakeTimer(self.t + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.due, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward, running what falls due in order (callbacks see their due time)."""
        if seconds < 0:
            raise ValueError(f"a FakeClock does not go back ({seconds} s)")
        self.set(self.t + seconds)

    def set(self, t: float) -> None:
        if t < self.t:
            raise ValueError(f"a FakeClock does not go back ({self.t} -> {t})")
        while self._timers and self._timers[0][0] <= t:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.t = due
            timer.callback(*timer.args)
        self.t = t

    @property
    def pending(self) -> int:
        """Timers scheduled and not yet run or cancelled."""
        return sum(not timer.cancelled for _, _, timer in self._timers)


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
