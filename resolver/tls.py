"""When Basic credentials count: the transport rule of the Handle REST API. Pure, no I/O.

Handle.Net counts Basic auth only over HTTPS; a request with credentials over plain HTTP is
treated as anonymous (a write then gets 403, responseCode 402). Here credentials sent in plain
text count when they cannot have crossed a network: from a loopback peer (the local cluster
``idsim up`` runs, and the recursive node passing a write on to a node on the same machine).
From any other peer they count only over HTTPS (``idsim up --tls``), unless
``HttpConfig.plain_auth_remote`` is 1.
"""
from __future__ import annotations

import ipaddress

from resolver.config import HttpConfig


def credentials_count(secure: bool, peer: str | None, config: HttpConfig) -> bool:
    """Whether Basic credentials on a request count (else the request is anonymous).

    ``secure``: the request came over TLS; ``peer``: the client's IP address as text (None
    or anything that is not an IP address counts as a remote peer).
    """
    if secure or config.plain_auth_remote:
        return True
    try:
        ip = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)
