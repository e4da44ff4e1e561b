"""The recursive node's cache miss answered without a task or a future of its own.

``FastMiss.take(conn, text, request, start)`` is asked by ``resolver.fast_http`` for a hot GET
whose answer is not cached (``RecursiveNode.cached_hit`` said None). It takes the request
(``conn._begin``) and answers it later: ``conn._finish`` with the answer when the rules of
``RecursiveNode.resolve`` (``resolution.steps``, driven here by callbacks over
``RpcClient.call_soon``) give one, "not found" or a Handle error (the bytes ``NodeAPI`` sends
for them: ``fast_http.json_error``); else ``conn._fallback`` (an error that is no
``HandleError``: aiohttp's path then resolves it again, a read, and answers as it does). It
does not take a text that does not parse, a key with any cache entry (stale and negative
entries have deadline rules: ``resolve``'s), or anything on a node with WAN links: those go
to aiohttp at once.

What ``resolve`` does is done the same here: the answer-cache miss is counted once, and the
node's ``stats`` (``resolutions``, ``coalesced``, ``upstream_calls``, ``delegation_calls``,
the outcome's source); identical questions in flight share one resolution (the future in
``node._inflight``, which either path may wait on); peer health (``answered_by``, ``failed``,
``release``); the upstream metrics (``call_soon`` times its calls as ``call`` does). When a
call cannot go out at once (no connection yet, or one to replace) or a peer fails with others
left to ask, the same generator goes on as a task on the awaited path (``RecursiveNode._ask_*``
with the peers already tried, then ``resolution.drive``).

Invariant: every taken request ends in exactly one ``_finish`` or ``_fallback`` (its future
always completes: an answer, an error, or the RPC deadline's ``PeerUnavailable``).
"""
from __future__ import annotations

import asyncio
from functools import partial
from time import perf_counter

from resolver import errors, records
from resolver.fast_http import json_answer, json_error
from resolver.resolution import AskTop, Site, drive

__all__ = ["FastMiss", "answered", "delegation"]


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
        key = handle.key
        answers = node.caches.answers
        if answers.holds(key):
            return False
        answers.get(key, node.clock())  # the miss, counted as ``cached``'s probe counts it
        node.stats["resolutions"] += 1
        conn._begin(request)
        self.taken += 1
        fut = node._inflight.get(key)
        if fut is not None:
            node.stats["coalesced"] += 1
        else:
            fut = conn._loop.create_future()
            node._inflight[key] = fut
            fut.add_done_callback(partial(node.landed, key))
            self._advance(node.steps_of(handle, False, None), None, fut)
        fut.add_done_callback(partial(self._reply, conn, text, handle.text, start))
        return True

    def _reply(self, conn, text: str, handle: str, start: float, fut: asyncio.Future) -> None:
        """Answer ``conn`` as ``RecursiveNode.resolve`` and ``NodeAPI`` would from ``fut``."""
        if fut.cancelled():
            conn._fallback()
            return
        exc = fut.exception()
        if exc is None:
            outcome = fut.result()
            if outcome.source == "stale":  # not from a miss; resolve's rules serve it
                conn._fallback()
                return
            self.node.stats[outcome.source] += 1
            if outcome.data is not None:
                conn._finish(json_answer(text, outcome.data))
                if conn._op is not None:
                    conn._op.observe(1, perf_counter() - start)
                return
            message = outcome.error.message if outcome.error else "Handle not found"
            exc = errors.HandleError(errors.HANDLE_NOT_FOUND, message, handle=handle)
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
    def _advance(self, gen, step, fut: asyncio.Future) -> None:
        """Take the generator's next step (``step()``; ``next`` when None) and ask for what
        it needs, or settle ``fut`` with its outcome or error."""
        try:
            need = next(gen) if step is None else step()
        except StopIteration as done:
            fut.set_result(done.value)
            return
        except Exception as exc:  # noqa: BLE001 - the steps' error is the resolution's
            fut.set_exception(exc)
            return
        self._ask(gen, need, fut)

    def _ask(self, gen, need, fut: asyncio.Future) -> None:
        node = self.node
        if isinstance(need, AskTop):
            addrs, kind, method, arg, counter = (node.tops, "top", "delegate", need.prefix,
                                                 "delegation_calls")
        else:
            (addrs, kind), method, arg = node.peers_of(need.site), "resolve", need.handle
            counter = "upstream_calls"
        addr = node.health.next(addrs)
        if addr is not None:
            got = partial(self._got, gen, need, fut, addrs, kind, addr)
            if node.peer(addr).call_soon(method, (arg,), got):
                node.stats[counter] += 1
                return
            node.health.release(addr)
        self._await(gen, need, fut, ())

    def _got(self, gen, need, fut, addrs, kind: str, addr: str, error, result) -> None:
        node = self.node
        if error is None:
            node.answered_by(addr, addrs, kind)
            try:
                reply = delegation(result) if isinstance(need, AskTop) else answered(result)
            except Exception as exc:  # noqa: BLE001 - an answer that cannot be read
                self._advance(gen, partial(gen.throw, exc), fut)
                return
            self._advance(gen, partial(gen.send, reply), fut)
        elif isinstance(error, errors.PeerUnavailable):
            node.health.failed(addr)
            self._await(gen, need, fut, (addr,))
        else:
            if isinstance(error, errors.HandleError):
                node.answered_by(addr, addrs, kind)  # an error the peer answered: its answer
            else:
                node.health.release(addr)
            self._advance(gen, partial(gen.throw, error), fut)

    def _await(self, gen, need, fut: asyncio.Future, tried: tuple[str, ...]) -> None:
        """Go on with ``need`` and the rest of the steps as a task on the awaited path; the
        peers of ``tried`` failed already at ``need`` (no later need has any)."""
        node, first = self.node, [tried]

        async def ask_top(prefix: str):
            return await node._ask_top(prefix, first.pop() if first else ())

        async def ask_node(site: Site, handle: str):
            return await node._ask_node(site, handle, first.pop() if first else ())

        task = asyncio.ensure_future(drive(gen, ask_top, ask_node, first=need))
        task.add_done_callback(partial(_settle, fut))


def _settle(fut: asyncio.Future, task: asyncio.Future) -> None:
    """``fut`` gets ``task``'s outcome."""
    if fut.done():
        return
    if task.cancelled():
        fut.cancel()
    elif task.exception() is not None:
        fut.set_exception(task.exception())
    else:
        fut.set_result(task.result())
