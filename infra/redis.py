"""The one way every process opens its Redis client (owned by a lifespan, never at import).

``redis://`` (or ``rediss://``, ``unix://``) is one Redis; ``redis+cluster://host:port``
(any node) is a Redis Cluster, through redis-py's ``RedisCluster``. Both clients answer the
commands the services send, with every key of one sale under the hash tag ``{product_id}``
(infra/sale/keys.py), so the services never ask which one they hold.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

REDIS_CLUSTER_SCHEME = "redis+cluster"
TIMEOUT_S = 5.0


def is_cluster_url(url: str) -> bool:
    return url.startswith(REDIS_CLUSTER_SCHEME + "://")


def create_redis(url: str, max_connections: int = 128) -> Redis:
    if is_cluster_url(url):
        # A cluster client is typed apart from Redis but answers the same commands; the one
        # place that must tell them apart is the auto-pipeline's routing.
        return RedisCluster.from_url(  # type: ignore[return-value]
            "redis" + url[len(REDIS_CLUSTER_SCHEME) :],
            decode_responses=True,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            max_connections=max_connections,  # per node
        )
    # A blocking pool: under a storm a request waits for a free connection instead of failing
    # with "too many connections". decode_responses: scripts return ids and states as str.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        decode_responses=True,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        # No health_check_interval: it costs every command a clock check and, measured under
        # load, about a third of the throughput; a dead connection fails its command instead
        # and the pool replaces it.
    )
    return Redis.from_pool(pool)
