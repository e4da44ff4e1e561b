"""Node-to-node RPC: msgpack-rpc over one persistent, pipelined TCP stream per peer.

This module is the public face: ``from resolver.rpc import RpcClient, RpcServer``. The parts:

- ``rpc_wire``: the wire format (the public msgpack-rpc spec; errors as ``[code, message,
  handle]`` with the Handle responseCode, so a remote failure surfaces as the same
  ``HandleError`` and HTTP status it would have been locally) and the framed, write-coalescing
  stream both ends share;
- ``rpc_server``: ``RpcServer(handlers, config, *, trust, clock)``, with its limits;
- ``rpc_client``: ``RpcClient(host, port, config, *, clock, trust)``;
- ``rpc_auth``: how a connection proves which node it is (per-node keys, HMAC challenge and
  response, both ways) and ``Method(fn, roles)``, what each node's ``rpc_handlers()`` returns.

Why not HTTP between nodes: a forwarded resolution is a few hundred bytes, and one long-lived
stream per peer with many outstanding calls keyed by msgid costs a few bytes of framing per call,
with no connection setup, no header parsing and no head-of-line blocking behind slow requests.
Every number (timeouts, retry window, message sizes, connection cap, log budget) comes from
``resolver.config.RpcConfig``.
"""
from __future__ import annotations

from .rpc_client import RpcClient
from .rpc_server import RpcServer
from .rpc_wire import NOTIFY, REQUEST, RESPONSE

__all__ = ["RpcServer", "RpcClient", "REQUEST", "RESPONSE", "NOTIFY"]
