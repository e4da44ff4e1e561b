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
from resolver.rpc_auth import Keyring, Trust

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
