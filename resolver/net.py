"""Addresses and outgoing TCP sockets: the one place a node splits ``host:port`` and opens a
connection to another node.

``split_address`` is the one parser of ``"host:port"`` / ``"[v6]:port"``.

Every outgoing socket a node opens (RPC clients, the HTTP session that passes writes on) comes
from ``client_socket``, which sets SO_REUSEADDR before connecting. Why: a client's local port is
taken from the kernel's ephemeral range (32768-60999 on Linux), which may overlap the ports a
topology serves on. When a client socket closes first, its port sits in TIME-WAIT for a minute,
and on Linux a TIME-WAIT left by a socket *without* SO_REUSEADDR blocks every later bind of that
port, even a server's bind with SO_REUSEADDR; one left by a socket *with* SO_REUSEADDR does not
block a server that binds with SO_REUSEADDR (as ``RpcServer`` and aiohttp's ``TCPSite`` do). So
our own node-to-node traffic never keeps a node from starting on its port.

Invariants: sockets returned are non-blocking; a socket is closed on every failure path.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import aiohttp

__all__ = ["split_address", "client_socket", "connect", "client_session"]


def split_address(addr: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``, brackets removed.

    ValueError when there is no port or it is not a number in 0..65535.
    """
    host, colon, port = addr.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port or [v6]:port, got {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def client_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """A non-blocking socket for ``addr_info`` (a ``getaddrinfo`` entry) with SO_REUSEADDR set,
    ready to be bound or connected. The signature is aiohttp's ``socket_factory``."""
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(host: str, port: int) -> socket.socket:
    """A connected, non-blocking ``client_socket`` to host:port.

    Tries each resolved address in turn; the OSError of the last one tried is raised when
    none answers (the same errors ``loop.create_connection`` raises).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for info in infos:
        sock = client_socket(info)
        try:
            await loop.sock_connect(sock, info[4])
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error if error is not None else OSError(f"cannot resolve {host}")


def client_session(*, ssl_context: ssl.SSLContext | None = None,
                   **kwargs: Any) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` whose connections use ``client_socket``.

    ``ssl_context``: what ``https://`` URLs are verified with (a cluster's CA:
    ``topology.pki.client_context``); None: aiohttp's default verification. Other keyword
    arguments go to the session (``timeout=``, ``headers=``...); it must be created inside a
    running event loop, as any ClientSession.
    """
    connector = aiohttp.TCPConnector(socket_factory=client_socket,
                                     ssl=True if ssl_context is None else ssl_context)
    return aiohttp.ClientSession(connector=connector, **kwargs)
