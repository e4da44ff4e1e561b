"""The four roles a node plays in the network. One enum, compared everywhere instead of strings.

``Role`` is a ``StrEnum``: a role is written to JSON, TOML and msgpack as its plain value
(``"top"``, ``"secondary"``, ``"recursive"``, ``"mirror"``) and compares equal to it.
"""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    TOP = "top"              # the national top-level node: delegations (0.NA/<prefix>, HS_SITE)
    SECONDARY = "secondary"  # homes enterprise prefixes and stores their records
    RECURSIVE = "recursive"  # the clients' entry point: resolves anything, caches answers
    MIRROR = "mirror"        # a read-only copy of a secondary node (``<code>~<city>``) or the
    #                          standby top-level node (``top~<city>``), following its primary
