"""A real Redis Cluster for the session: three masters with one replica each, valkey-server
nodes on loopback (infra/stack/cluster.py), or ``FLASHSALE_REDIS_CLUSTER_URL``
(``redis+cluster://...``) pointing at an external one."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from infra.redis import create_redis
from infra.settings import Settings
from infra.stack.cluster import EmbeddedCluster
from tests.conftest import _InfraLoop, _server_data_dir


@pytest.fixture(scope="session")
def embedded_cluster(_infra_loop: _InfraLoop) -> Iterator[EmbeddedCluster | None]:
    """The session's own cluster, or None where FLASHSALE_REDIS_CLUSTER_URL names one."""
    if os.environ.get("FLASHSALE_REDIS_CLUSTER_URL"):
        yield None
        return
    with _server_data_dir("cluster") as data_dir:
        cluster = EmbeddedCluster(data_dir)
        _infra_loop.run(cluster.start())
        try:
            yield cluster
        finally:
            _infra_loop.run(cluster.stop())


@pytest.fixture(scope="session")
def cluster_url(embedded_cluster: EmbeddedCluster | None) -> str:
    if embedded_cluster is None:
        return os.environ["FLASHSALE_REDIS_CLUSTER_URL"]
    return embedded_cluster.url


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A cluster client on the test's own loop, made the way every process makes one."""
    client = create_redis(cluster_url)
    assert isinstance(client, RedisCluster)
    try:
        yield client
    finally:
        await client.aclose()


# The waiting-room, scheduler and order tests run here once more, on the cluster: each
# test_on_cluster_*.py module imports one of their modules (and its fixtures), and these
# overrides give them the cluster wherever they ask for Redis.


@pytest.fixture(scope="session")
def redis_url(cluster_url: str) -> str:
    return cluster_url


@pytest.fixture
async def redis(cluster: RedisCluster) -> RedisCluster:
    return cluster


@pytest.fixture(scope="session")
def stack_settings(cluster_url: str, migrated_database_url: str, kafka_bootstrap: str) -> Settings:
    # Session fixtures are cached once per session: the root one holds the single Valkey.
    return Settings.from_env(
        {},
        dev=True,
        redis_url=cluster_url,
        database_url=migrated_database_url,
        kafka_bootstrap=kafka_bootstrap,
    )
