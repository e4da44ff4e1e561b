"""Demo identifiers: what a seeded enterprise's records look like. Pure; no I/O.

A demo record holds a product page URL (index 1), a checksum (2), one value per field of the
enterprise's industry template from index 3 (``resolver.templates.values``; none without a
template) and HS_ADMIN naming the prefix's admin group (100), as pyhandle writes it.
"""
from __future__ import annotations

import hashlib

from resolver.templates import Template, compile_fields, template_of, values


def suffix(i: int) -> str:
    return f"SN{i:09d}"


def demo_values(prefix: str, i: int, template: Template | None = None) -> list[dict]:
    """The REST JSON values of demo identifier ``i`` under ``prefix`` (see the module)."""
    sfx = suffix(i)
    digest = hashlib.sha1(f"{prefix}/{sfx}".encode()).hexdigest()
    url = f"https://ex.com/{prefix}/{sfx}"
    fields = [] if template is None else [
        {"index": 3 + k, "type": f.name, "data": {"format": "string", "value": text}}
        for k, (f, text) in enumerate(zip(template.fields, values(
            compile_fields(template), int(digest[:16], 16), "SN", "2111", f"{i:09d}", url)))]
    return [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": url}},
        {"index": 2, "type": "CHECKSUM", "data": {"format": "string", "value": f"sha1:{digest}"}},
        *fields,
        {"index": 100, "type": "HS_ADMIN",
         "data": {"format": "admin",
                  "value": {"handle": f"0.NA/{prefix}", "index": 200,
                            "permissions": "111111111111"}}},
    ]


def demo_batch(prefix: str, start: int, count: int,
               template: Template | None = None) -> list[tuple[str, dict]]:
    return [(f"{prefix}/{suffix(i)}", {"values": demo_values(prefix, i, template)})
            for i in range(start, start + count)]


def example(topo, ent) -> str | None:
    """An identifier enterprise *ent* of topology *topo* holds in its population mode: the
    middle of its synthetic population ("full"), its first demo identifier ("demo"), or None."""
    if topo.population == "full" and ent.identifiers:
        from resolver.population import EnterprisePopulation
        template = template_of(topo.templates_by_industry(), ent.industry)
        pop = EnterprisePopulation(ent.prefix, ent.identifiers, template, topo.seed)
        return f"{ent.prefix}/{pop.suffix(ent.identifiers // 2)}"
    if topo.population == "demo" and topo.identifiers_per_enterprise:
        return f"{ent.prefix}/{suffix(0)}"
    return None
