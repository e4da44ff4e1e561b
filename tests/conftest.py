"""Shared fixtures: a secondary node in memory, its Handle REST app under a test client, and
Basic-auth headers built exactly as pyhandle builds them (``auth.basic_header``)."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from resolver import auth, server
from resolver.nodes import SecondaryNode
from resolver.store import open_store
from resolver.web import NodeAPI

NODE_ADMIN = "300:0.NA/88.118"
NODE_ADMIN_SECRET = "node-admin-secret"
ENT8 = "300:0.NA/88.118.8"
ENT8_SECRET = "ent-secret-8"
ENT9 = "300:0.NA/88.118.9"
ENT9_SECRET = "ent-secret-9"


basic_token = auth.basic_header  # the name the tests import


def auth_headers(user: str, secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": basic_token(user, secret), **extra}


def ent8_headers(**extra: str) -> dict[str, str]:
    return auth_headers(ENT8, ENT8_SECRET, **extra)


def ent9_headers(**extra: str) -> dict[str, str]:
    return auth_headers(ENT9, ENT9_SECRET, **extra)


def admin_headers(**extra: str) -> dict[str, str]:
    return auth_headers(NODE_ADMIN, NODE_ADMIN_SECRET, **extra)


@pytest.fixture
async def node():
    """Node "gz" homing 88.118, bootstrapped, with enterprises 88.118.8 and 88.118.9."""
    n = SecondaryNode("gz", open_store("memory:"), ["88.118"])
    creds = await n.bootstrap(NODE_ADMIN_SECRET)
    assert creds.username == NODE_ADMIN
    admin = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118")
    c8 = await n.create_prefix("88.118.8", identity=admin, secret=ENT8_SECRET)
    c9 = await n.create_prefix("88.118.9", identity=admin, secret=ENT9_SECRET)
    assert (c8.username, c9.username) == (ENT8, ENT9)
    yield n
    await n.close()


async def serve(node) -> TestClient:
    """A started test client for ``NodeAPI(node)``, served with the limits ``server.serve``
    gives it (the node's own ``[http]`` section)."""
    srv = RawTestServer(NodeAPI(node), host="127.0.0.1")
    # RawTestServer drops constructor kwargs; the server's limits go to start_server.
    await srv.start_server(**server.server_limits(node.config.http))
    cli = TestClient(srv)
    await cli.start_server()
    return cli


@pytest.fixture
async def client(node):
    """A test client for ``NodeAPI(node)``, served with the same limits as ``server.serve``."""
    cli = await serve(node)
    yield cli
    await cli.close()


# ---- a real local Redis Cluster for redis-cluster:// stores (s4, issue 12 part 4)
@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One local 3-master Redis Cluster for the session (skipped, with the reason, when
    redis-server cannot be found or installed)."""
    from tests.redis_cluster import LocalRedisCluster  # imported only when a test asks
    try:
        cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    except RuntimeError as exc:
        print(f"redis-cluster tests skipped: {exc}")
        pytest.skip(str(exc))
    try:
        yield cluster.create()
    finally:
        cluster.stop()
