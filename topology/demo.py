"""Demo identifiers: what a seeded enterprise's records look like. Pure; no I/O."""
from __future__ import annotations

import hashlib


def suffix(i: int) -> str:
    return f"SN{i:09d}"


def demo_values(prefix: str, i: int) -> list[dict]:
    """The REST JSON values of demo identifier ``i`` under ``prefix``: a product page URL,
    a checksum, and HS_ADMIN naming the prefix's admin group (as pyhandle writes it)."""
    sfx = suffix(i)
    digest = hashlib.sha1(f"{prefix}/{sfx}".encode()).hexdigest()
    return [
        {"index": 1, "type": "URL",
         "data": {"format": "string", "value": f"https://ex.com/{prefix}/{sfx}"}},
        {"index": 2, "type": "CHECKSUM", "data": {"format": "string", "value": f"sha1:{digest}"}},
        {"index": 100, "type": "HS_ADMIN",
         "data": {"format": "admin",
                  "value": {"handle": f"0.NA/{prefix}", "index": 200,
                            "permissions": "111111111111"}}},
    ]


def demo_batch(prefix: str, start: int, count: int) -> list[tuple[str, dict]]:
    return [(f"{prefix}/{suffix(i)}", {"values": demo_values(prefix, i)})
            for i in range(start, start + count)]
