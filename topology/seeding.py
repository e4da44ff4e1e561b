"""Demo data in a running secondary node: its enterprise prefixes (with their logins) and
demo identifiers ``SN000000000…`` under each, registered by the node's admin.

Idempotent: prefixes that exist and identifiers already there are kept, so a restart seeds
only what is missing. What a demo record holds is ``topology.demo`` (pure); this module is
the I/O that writes it through the node, in batches that span prefixes (a cluster's 4,065
small enterprises take a few durable commits, not thousands).
"""
from __future__ import annotations

from typing import Callable

from resolver import auth
from resolver.nodes import SecondaryNode
from resolver.templates import Template, template_of
from topology import demo
from topology.model import Topology

BATCH = 5000  # identifiers per durable commit while seeding


async def seed_node(node: SecondaryNode, topo: Topology, logins: dict, per_enterprise: int,
                    progress: Callable[[str, int], None] | None = None) -> int:
    """Allocate the node's enterprise prefixes with the secrets in ``logins``, then seed
    ``per_enterprise`` demo identifiers under each. Returns how many identifiers were added."""
    admin = auth.Identity(auth.SECRET_INDEX, f"0.NA/{node.homed[0]}")
    enterprises = topo.enterprises_of(node.homed[0])
    for ent in enterprises:
        if node.values_of(f"0.NA/{ent.prefix}") is None:
            await node.create_prefix(ent.prefix, identity=admin,
                                     secret=logins["enterprises"][ent.prefix]["secret"], token=True)
    by_industry = topo.templates_by_industry()
    return await seed(node, {ent.prefix: per_enterprise for ent in enterprises}, progress,
                      templates={e.prefix: template_of(by_industry, e.industry)
                                 for e in enterprises})


async def seed(node: SecondaryNode, wanted: dict[str, int],
               progress: Callable[[str, int], None] | None = None, batch_size: int = BATCH,
               templates: dict[str, Template] | None = None) -> int:
    """Demo identifiers up to the wanted count under each prefix, their values after the
    prefix's template in ``templates`` (none: URL and checksum only); returns how many."""
    admin = auth.Identity(auth.SECRET_INDEX, f"0.NA/{node.homed[0]}")
    batch_size = min(batch_size, node.config.batch.max_register)  # what one batch may hold
    pending: list[tuple[str, dict]] = []
    added = 0

    async def flush(items: list[tuple[str, dict]]) -> None:
        await node.register_many(items, identity=admin, overwrite=True)
        if progress:
            progress(node.homed[0], len(items))

    for prefix, count in wanted.items():
        start = node.store.count(node.key(prefix))
        while start < count:
            n = min(batch_size - len(pending), count - start)
            pending.extend(demo.demo_batch(prefix, start, n, (templates or {}).get(prefix)))
            start += n
            if len(pending) >= batch_size:
                await flush(pending)
                added += len(pending)
                pending = []
    if pending:
        await flush(pending)
        added += len(pending)
    return added
