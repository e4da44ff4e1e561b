"""One connection of an ``RpcClient`` (``resolver.rpc_client``, whose docstring states the
invariants), and ``Reply``, the pending call ``RpcClient.call_soon`` answers by callback.

``ClientConnection`` is the framed stream (``rpc_wire.Stream``) with the client's handshake
(``resolver.rpc_auth``), its pending calls by msgid (futures of ``call``, ``Reply`` objects of
``call_soon``: both are answered with ``set_result`` / ``set_exception`` and skipped once
``done()``) and one deadline timer for all of them (``rpc_wire.Deadlines``).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .errors import HandleError, PeerUnavailable
from .rpc_auth import CHALLENGE, HELLO, REFUSED, WELCOME
from .rpc_wire import NOTIFY, RESPONSE, Deadlines, Malformed, Stream, log, rebuild_error, set_nodelay

if TYPE_CHECKING:
    from .rpc_client import RpcClient

__all__ = ["ClientConnection", "Reply"]


class ClientConnection(Stream):
    __slots__ = ("_client", "pending", "lost", "_closed", "ready", "_proven", "_nonce",
                 "_server", "last", "deadlines")

    def __init__(self, client: "RpcClient"):
        super().__init__(client.config.max_answer)
        self._client = client
        self.pending: dict[int, asyncio.Future] = {}
        self.lost = False
        self._closed = self._loop.create_future()
        # done when the handshake is (at once without trust); its result: the server's name
        self.ready = self._loop.create_future()
        self._proven = client.trust is None
        self._nonce = b""
        self._server: tuple[str, bytes] | None = None  # (name, nonce) from its challenge
        self.last = client._clock()  # the last byte in or out (see RpcClient.call)
        # each call's deadline (one timer for all: rpc_wire.Deadlines)
        self.deadlines = Deadlines(client._clock, lambda method: PeerUnavailable(
            f"{client.address} did not answer {method} within {client.config.timeout}s"))
        if self._proven:
            self.ready.set_result(None)

    def connection_made(self, transport):
        self.transport = transport
        set_nodelay(transport)

    def connection_lost(self, exc):
        why = f"connection to {self._client.address} lost" + (f" ({exc})" if exc else "")
        self._drop(why)
        if not self._closed.done():
            self._closed.set_result(None)

    def _drop(self, why: str) -> None:
        """Mark this connection dead and fail every call still waiting on it."""
        self.lost = True
        self.deadlines.clear()
        client = self._client
        if client._conn is self:
            client._conn = None
        pending, self.pending = self.pending, {}
        if not self.ready.done():
            self.ready.set_exception(PeerUnavailable(why))
        for fut in list(pending.values()):  # a Reply leaves the dict as it is answered
            if not fut.done():
                fut.set_exception(PeerUnavailable(why))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data):
        self.last = self._client._clock()
        pending = self.pending
        try:
            self._unpacker.feed(data)
            for msg in self._unpacker:
                if not self._proven:
                    self._handshake(msg)
                elif type(msg) is list and len(msg) == 4 and msg[0] == RESPONSE:
                    fut = pending.get(msg[1])
                    if fut is None or fut.done():
                        continue  # timed out or cancelled meanwhile
                    error = msg[2]
                    if error is None:
                        fut.set_result(msg[3])
                    else:
                        fut.set_exception(rebuild_error(error))
                elif type(msg) is list and len(msg) == 3 and msg[0] == NOTIFY:
                    continue  # server-to-client notifications are not used
                else:
                    raise Malformed("not a response")
        except HandleError as exc:  # the handshake failed
            log.warning("rpc: connection to %s: %s", self._client.address, exc.message)
            if not self.ready.done():
                self.ready.set_exception(exc)
            self._drop(f"handshake with {self._client.address} failed")
            self.abort()
        except Exception as exc:
            log.warning("rpc: closing connection to %s: malformed input (%s: %s)",
                        self._client.address, type(exc).__name__, str(exc)[:200])
            self._drop(f"malformed answer from {self._client.address}")
            self.abort()

    def _handshake(self, msg) -> None:
        """Answer the server's challenge, then check its welcome (``resolver.rpc_auth``)."""
        if not (type(msg) is list and len(msg) == 3 and msg[0] == NOTIFY):
            raise Malformed("expected the handshake")
        trust = self._client.trust
        if msg[1] == CHALLENGE and self._server is None:
            self._nonce = trust.nonce()
            name, hello = trust.hello(msg[2], self._nonce)
            self._server = (name, msg[2][2])
            self.send(self.packer.pack([NOTIFY, HELLO, hello]))
        elif msg[1] == WELCOME and self._server is not None:
            name, server_nonce = self._server
            trust.check_welcome(name, server_nonce, self._nonce, msg[2])
            self._proven = True
            self.ready.set_result(name)
        elif msg[1] == REFUSED:
            raise rebuild_error(msg[2])
        else:
            raise Malformed(f"unexpected {str(msg[1])[:40]} during the handshake")



class Reply:
    """A ``call_soon`` call where ``call`` keeps a future: answered (``set_result``,
    ``set_exception``, ``cancel``) once, it leaves the pending calls and runs ``done``."""

    __slots__ = ("_done", "_pending", "_msgid", "_client", "_method", "_start")

    def __init__(self, done, pending: dict, msgid: int, client: "RpcClient", method: str,
                 start: float) -> None:
        self._done, self._pending, self._msgid = done, pending, msgid
        self._client, self._method, self._start = client, method, start

    def done(self) -> bool:
        return self._done is None

    def set_result(self, result: Any) -> None:
        self._settle(None, result)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(exc, None)

    def cancel(self) -> None:
        self._settle(PeerUnavailable(f"call to {self._client.address} cancelled"), None)

    def _settle(self, error: BaseException | None, result: Any) -> None:
        done = self._done
        if done is None:
            return
        self._done = None
        if self._pending.get(self._msgid) is self:
            del self._pending[self._msgid]
        client = self._client
        if client.observer is not None:
            client.observer(self._method, client._clock() - self._start,
                            isinstance(error, PeerUnavailable))
        try:
            done(error, result)
        except Exception as exc:  # the caller's bug must not pass for a malformed answer
            log.error("rpc: callback for %s to %s failed", self._method, client.address,
                      exc_info=exc)
