"""The recursive node's cache miss answered without a task or a future of its own.

``FastMiss.take(conn, text, request, start)`` is asked by ``resolver.fast_http`` for a hot GET
whose answer is not cached (``RecursiveNode.cached_hit`` said None). It takes the request
(``conn._begin``) and answers it later with ``conn._finish``: the rules of
``RecursiveNode.resolve`` (``resolution.steps``, driven here by callbacks over
``RpcClient.call_soon``) give an outcome, ``RecursiveNode.result`` the record or "not found",
and the bytes are those ``NodeAPI`` sends for them, or for any Handle error
(``fast_http.json_error``). Anything else (an error that is no ``HandleError``, a status whose
answer has more headers) goes back to aiohttp (``conn._fallback``), which resolves it again (a
read) and answers as it always does. It does not take a text that does not parse or is
not its handle's own (``hdl:``), a key with any cache entry (stale and negative entries have
deadline rules: ``resolve``'s), or anything on a node with WAN links: those go to aiohttp at
once.

What ``resolve`` does is done the same here: the answer-cache miss is counted once, and the
node's ``stats`` (``resolutions``, ``coalesced``, ``upstream_calls``, ``delegation_calls``,
the outcome's source); identical questions in flight share one resolution (a ``Flight`` in
``node._inflight``, whose waiters are called as it lands, with no future or scheduled
callback, while aiohttp's path waits on a future it makes; or aiohttp's path's task); peer
health (``answered_by``, ``failed``, ``release``); the upstream metrics (``call_soon`` times
its calls as ``call`` does). When a call cannot go out at once (no connection yet, or one to
replace) or a peer fails with others left to ask, the same generator goes on as a task on the
awaited path (``RecursiveNode._ask_*`` with the peers already tried, then
``resolution.drive``).

Invariant: every taken request ends in exactly one ``_finish`` or ``_fallback`` (its flight
always lands: an answer, an error, or the RPC deadline's ``PeerUnavailable``).
"""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from time import perf_counter

from resolver import errors, records
from resolver.fast_http import json_answer, json_error
from resolver.resolution import AskTop, Site, drive

__all__ = ["FastMiss", "Flight", "answered", "delegation"]
log = logging.getLogger("idsim.fast_miss")


def delegation(wire) -> tuple[Site, int]:
    """A ``delegate`` RPC's answer as ``resolution.locate`` takes it."""
    site, ttl = wire
    return Site.from_wire(site), ttl


def answered(data: bytes) -> tuple[records.Answer, tuple[int, ...]]:
    """A ``resolve`` RPC's answer as ``resolution.steps`` takes it."""
    answer = records.Answer(data)
    return answer, answer.ttls


class FastMiss:
    """A recursive node's misses, answered by callbacks (the module's doc)."""

    __slots__ = ("node", "taken")

    def __init__(self, node) -> None:
        self.node = node
        self.taken = 0  # requests taken here

    def take(self, conn, text: str, request: bytes, start: float) -> bool:
        """Answer ``request`` (a GET of ``text``) later on ``conn``, or return False."""
        node = self.node
        if node.links is not None:
            return False
        try:
            handle = node.parse(text)
        except errors.HandleError:
            return False
        if handle.text != text:  # ``hdl:``: aiohttp's path probes the cache under both keys
            return False
        key = handle.key
        answers = node.caches.answers
        if answers.holds(key):
            return False
        answers.get(key, node.clock())  # the miss, counted as ``cached``'s probe counts it
        node.stats["resolutions"] += 1
        conn._begin(request)
        self.taken += 1
        reply = partial(self._reply, conn, text, handle.text, start)
        flight = node._inflight.get(key)
        if flight is None:
            flight = node._inflight[key] = Flight(node._inflight, key, conn._loop)
            flight.waiters.append(reply)
            self._advance(node.steps_of(handle, False, None), None, flight)
        else:
            node.stats["coalesced"] += 1
            if type(flight) is Flight:
                flight.waiters.append(reply)
            else:  # aiohttp's path started it: its task
                flight.add_done_callback(partial(_outcome_of, reply))
        return True

    def _reply(self, conn, text: str, handle: str, start: float, outcome,
               exc: BaseException | None) -> None:
        """Answer ``conn`` as ``RecursiveNode.resolve`` and ``NodeAPI`` would, from the
        resolution's ``outcome`` or its error ``exc``."""
        if isinstance(exc, asyncio.CancelledError):
            conn._fallback()
            return
        if exc is None:
            try:
                answer = self.node.result(outcome, handle)
            except errors.HandleError as err:
                exc = err
            else:
                conn._finish(json_answer(text, answer))
                if conn._op is not None:
                    conn._op.observe(1, perf_counter() - start)
                return
        elif isinstance(exc, errors.HandleError):
            exc = exc.with_handle(handle)
        response = json_error(exc) if isinstance(exc, errors.HandleError) else None
        if response is None:
            conn._fallback()
            return
        conn._finish(response)
        if conn._op is not None:
            conn._op.observe(exc.code, perf_counter() - start)

    # ------------------------------------------------------------ driving the steps
    def _advance(self, gen, step, flight: "Flight") -> None:
        """Take the generator's next step (``step()``; ``next`` when None) and ask for what
        it needs, or settle ``flight`` with its outcome or error."""
        try:
            need = next(gen) if step is None else step()
        except StopIteration as done:
            flight.set_result(done.value)
            return
        except Exception as exc:  # noqa: BLE001 - the steps' error is the resolution's
            flight.set_exception(exc)
            return
        self._ask(gen, need, flight)

    def _ask(self, gen, need, flight: "Flight") -> None:
        node = self.node
        if isinstance(need, AskTop):
            addrs, kind, method, arg, counter = (node.tops, "top", "delegate", need.prefix,
                                                 "delegation_calls")
        else:
            (addrs, kind), method, arg = node.peers_of(need.site), "resolve", need.handle
            counter = "upstream_calls"
        addr = node.health.next(addrs)
        if addr is not None:
            got = partial(self._got, gen, need, flight, addrs, kind, addr)
            if node.peer(addr).call_soon(method, (arg,), got):
                node.stats[counter] += 1
                return
            node.health.release(addr)
        self._await(gen, need, flight, ())

    def _got(self, gen, need, flight, addrs, kind: str, addr: str, error, result) -> None:
        node = self.node
        if error is None:
            node.answered_by(addr, addrs, kind)
            try:
                reply = delegation(result) if isinstance(need, AskTop) else answered(result)
            except Exception as exc:  # noqa: BLE001 - an answer that cannot be read
                self._advance(gen, partial(gen.throw, exc), flight)
                return
            self._advance(gen, partial(gen.send, reply), flight)
        elif isinstance(error, errors.PeerUnavailable):
            node.health.failed(addr)
            self._await(gen, need, flight, (addr,))
        else:
            if isinstance(error, errors.HandleError):
                node.answered_by(addr, addrs, kind)  # an error the peer answered: its answer
            else:
                node.health.release(addr)
            self._advance(gen, partial(gen.throw, error), flight)

    def _await(self, gen, need, flight: "Flight", tried: tuple[str, ...]) -> None:
        """Go on with ``need`` and the rest of the steps as a task on the awaited path; the
        peers of ``tried`` failed already at ``need`` (no later need has any)."""
        node, first = self.node, [tried]

        async def ask_top(prefix: str):
            return await node._ask_top(prefix, first.pop() if first else ())

        async def ask_node(site: Site, handle: str):
            return await node._ask_node(site, handle, first.pop() if first else ())

        task = asyncio.ensure_future(drive(gen, ask_top, ask_node, first=need))
        task.add_done_callback(partial(_settle, flight))


def _settle(flight: "Flight", task: asyncio.Future) -> None:
    """``flight`` lands with ``task``'s outcome."""
    if task.cancelled():
        flight.cancel()
    elif task.exception() is not None:
        flight.set_exception(task.exception())
    else:
        flight.set_result(task.result())


def _outcome_of(reply, fut: asyncio.Future) -> None:
    """``reply(outcome, error)`` from a finished future (a resolution aiohttp's path began)."""
    if fut.cancelled():
        reply(None, asyncio.CancelledError())
    else:
        exc = fut.exception()
        reply(None if exc is not None else fut.result(), exc)


class Flight:
    """A resolution a fast miss began, in ``node._inflight`` under its key until it lands:
    ``set_result``/``set_exception``/``cancel`` (once; later ones do nothing) take it out and
    call each of ``waiters`` with ``(outcome, error)`` at once, in that step. A request on
    aiohttp's path that finds it waits on ``future()``, made for it then."""

    __slots__ = ("waiters", "_inflight", "_key", "_loop", "_future", "_landed")

    def __init__(self, inflight: dict, key: bytes, loop) -> None:
        self.waiters: list = []
        self._inflight, self._key, self._loop = inflight, key, loop
        self._future: asyncio.Future | None = None
        self._landed = False

    def future(self) -> asyncio.Future:
        if self._future is None:
            self._future = self._loop.create_future()
        return self._future

    def done(self) -> bool:
        return self._landed

    def set_result(self, outcome) -> None:
        self._land(outcome, None)

    def set_exception(self, exc: BaseException) -> None:
        self._land(None, exc)

    def cancel(self) -> None:
        self._land(None, asyncio.CancelledError())

    def _land(self, outcome, exc: BaseException | None) -> None:
        if self._landed:
            return
        self._landed = True
        if self._inflight.get(self._key) is self:
            del self._inflight[self._key]
        fut = self._future
        if fut is not None and not fut.done():
            if exc is None:
                fut.set_result(outcome)
            elif isinstance(exc, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(exc)
                fut.exception()  # retrieved: each waiter re-raises it itself
        for reply in self.waiters:
            try:
                reply(outcome, exc)
            except Exception:  # noqa: BLE001 - one connection's failure is not the others'
                log.exception("answering a fast miss failed")
