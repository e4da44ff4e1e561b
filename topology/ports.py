"""Which of a topology's listening addresses are already taken: the one probe of the OS.

`find_ports_in_use` binds each endpoint the way the servers bind (SO_REUSEADDR) and closes
it at once, so it reports a port exactly when a server could not bind it there; it never
listens or connects. Ports outside 1..65535 are left to `topology.validation.validate`.
"""
from __future__ import annotations

import errno
import os
import socket

from .model import MAX_PORT, MIN_PORT, Topology

__all__ = ["find_ports_in_use"]


def find_ports_in_use(topology: Topology) -> list[str]:
    """Try to bind every endpoint of *topology*; describe those that cannot be bound.

    Each description reads ``"<node> <http|rpc> host:port: <reason>"``; the reason is
    ``address already in use`` for a taken port, otherwise the OS error (for example a host
    that is not a local address, or a privileged port). Sockets are bound with SO_REUSEADDR,
    as servers bind, and closed at once. Ports outside 1..65535 are skipped; `validate`
    reports those.
    """
    found = []
    for label, host, port in topology.endpoints():
        if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
            continue
        reason = _bind_problem(host, port)
        if reason is not None:
            found.append(f"{label} {host}:{port}: {reason}")
    return found


def _bind_problem(host: str, port: int) -> str | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot resolve host ({exc})"
    family, socktype, proto, _, sockaddr = infos[0]
    try:
        sock = socket.socket(family, socktype, proto)
    except OSError as exc:
        return f"cannot create socket ({exc.strerror or exc})"
    with sock:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let us bind a port in use
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "address already in use"
            return f"cannot bind ({exc.strerror or exc})"
    return None
