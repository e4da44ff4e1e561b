"""The secondary and top-level nodes take their limits from Config, and keep authority true.

(The rules themselves are tested in test_authority.py; the REST behaviour in test_web.py.)
"""
from __future__ import annotations

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from resolver import auth, errors, records
from resolver.auth import Identity
from resolver.config import Config
from resolver.nodes import SecondaryNode
from resolver.resolution import Site
from resolver.roles import Role
from resolver.rpc_auth import Caller
from resolver.store import open_store
from resolver.top import TopNode
from resolver.web import NodeAPI

NODE = Identity(auth.SECRET_INDEX, "0.NA/88.118")
ENT8 = Identity(auth.SECRET_INDEX, "0.NA/88.118.8")


def config(**sections) -> Config:
    return Config().with_values("test", sections)


async def secondary(cfg: Config | None = None) -> SecondaryNode:
    node = SecondaryNode("gz", open_store("memory:"), ["88.118"], cfg)
    await node.bootstrap("node-secret")
    await node.create_prefix("88.118.8", identity=NODE, secret="ent8-secret")
    return node


async def test_defaults_and_roles():
    node = await secondary()
    top = TopNode("top", open_store("memory:"))
    assert node.config == Config() and top.config == Config()
    assert (node.role, top.role) == (Role.SECONDARY, Role.TOP)
    assert node.authority.max_entries == Config().cache.memo_entries
    await node.close()
    await top.close()


async def test_batch_register_limit_comes_from_config():
    node = await secondary(config(batch={"max_register": 2}))
    items = [(f"88.118.8/x{i}", [{"index": 1, "type": "URL", "data": "u"}]) for i in range(3)]
    with pytest.raises(errors.HandleError) as info:
        await node.register_many(items, identity=ENT8)
    assert (info.value.code, info.value.status) == (errors.INVALID_VALUE, 413)
    assert "at most 2 identifiers" in info.value.message
    done = await node.register_many(items[:2], identity=ENT8)
    assert [r["responseCode"] for r in done] == [errors.SUCCESS] * 2
    await node.close()


async def test_batch_resolve_limit_comes_from_the_nodes_config():
    node = await secondary(config(batch={"max_resolve": 2}))
    client = TestClient(RawTestServer(NodeAPI(node), host="127.0.0.1"))
    await client.start_server()
    try:
        r = await client.post("/api/batch/resolve", json=["88.118.8/a", "88.118.8/b", "88.118.8/c"])
        assert r.status == 413
        assert "at most 2 identifiers" in (await r.json())["message"]
        r = await client.post("/api/batch/resolve", json=["88.118.8/a", "88.118.8/b"])
        assert r.status == 200
    finally:
        await client.close()
        await node.close()


async def test_top_node_delegates_with_the_configured_site_ttl():
    top = TopNode("top", open_store("memory:"), "88", config(cache={"site_ttl": 60}))
    await top.bootstrap("top-secret")
    await top.add_node("88.118", Site("88.118", "http://127.0.0.1:8001", "127.0.0.1:9001"),
                       "node-secret")
    assert top.delegate("88.118")[1] == 60
    assert await top.register_prefixes(Caller("88.118", Role.SECONDARY), ["88.118.8"],
                                       ["88.118", "http://127.0.0.1:8001", "127.0.0.1:9001"]) == 1
    site, ttl = top.delegate("88.118.8.1")
    assert (site.prefix, ttl) == ("88.118.8", 60)
    await top.close()


async def test_a_changed_secret_counts_at_once():
    """Logins are memoised; a write to the record holding the secret must end that."""
    node = await secondary()
    assert node.authenticate(ENT8, "ent8-secret") == ENT8
    na8 = node.parse("0.NA/88.118.8")
    await node.put(na8, [records.Value(auth.SECRET_INDEX, "HS_SECKEY", "new-secret")],
                   identity=NODE, indexes={auth.SECRET_INDEX})
    with pytest.raises(errors.HandleError) as info:
        node.authenticate(ENT8, "ent8-secret")
    assert info.value.code == errors.AUTHENTICATION_FAILED
    assert node.authenticate(ENT8, "new-secret") == ENT8
    await node.close()
