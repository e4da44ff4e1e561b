"""Helpers for the RPC trust and limit tests: raw connections that speak msgpack by hand, and
clients that prove they are a node of a cluster.

``raw_session`` reads until the server closes the connection; a server that keeps it open
fails the test through the guard timeout (a bound against a hang, not an ordering device).
"""
from __future__ import annotations

import asyncio

import msgpack

from resolver.config import RpcConfig
from resolver.rpc import RpcClient
from resolver.rpc_auth import HELLO, Keyring, Trust

GUARD = 10.0  # s: longest a test waits for a server to answer or close


def pack(*messages) -> bytes:
    return b"".join(msgpack.packb(m, use_bin_type=True) for m in messages)


async def raw_session(port: int, payload: bytes, *, guard: float = GUARD) -> list:
    """Send ``payload``, return every message the server sent until it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    try:
        async with asyncio.timeout(guard):
            while chunk := await reader.read(65536):
                unpacker.feed(chunk)
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return list(unpacker)


def errors_in(messages: list) -> list:
    """The ``error`` of every response among ``messages``."""
    return [m[2] for m in messages if isinstance(m, list) and len(m) == 4 and m[0] == 1]


def as_node(name: str, logins: dict, port: int, config: RpcConfig | None = None,
            **kw) -> RpcClient:
    """A client to 127.0.0.1:``port`` that proves it is node ``name`` with the cluster's keys."""
    return RpcClient("127.0.0.1", port, config, trust=Trust(name, Keyring.from_logins(logins)),
                     **kw)


class Raw:
    """A connection speaking msgpack by hand; ``prove`` does the handshake as a node."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.unpacker = msgpack.Unpacker(raw=False)
        self.challenge = None

    @classmethod
    async def open(cls, port: int) -> "Raw":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def next(self):
        """The next message from the server (None when it closed)."""
        async with asyncio.timeout(GUARD):
            while True:
                for msg in self.unpacker:
                    if msg[:2] == [2, "idsim.challenge"]:
                        self.challenge = msg
                    return msg
                chunk = await self.reader.read(65536)
                if not chunk:
                    return None
                self.unpacker.feed(chunk)

    async def prove(self, client: Trust) -> "Raw":
        challenge = self.challenge or await self.next()
        _, hello = client.hello(challenge[2], client.nonce())
        self.writer.write(pack([2, HELLO, hello]))
        assert (await self.next())[1] == "idsim.welcome"
        return self

    async def closed(self) -> bool:
        """True once the server has closed (reads to the end, under the guard)."""
        try:
            while await self.next() is not None:
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self):
        self.writer.close()
