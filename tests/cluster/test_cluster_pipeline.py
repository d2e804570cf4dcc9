"""The auto-pipeline and the sale's functions on a real Redis Cluster."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from infra.autopipeline import AutoPipeline
from infra.sale.keys import sale_keys
from infra.sale.scripts import SaleScripts

# Appends to a list and answers its new length: the replies show the order calls ran in.
APPEND = "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('LLEN', KEYS[1])"


def _product_ids(n: int) -> list[str]:
    tag = secrets.token_hex(4)
    return [f"cl-{tag}-{i}" for i in range(n)]


async def _masters_of(cluster: RedisCluster, keys: list[str]) -> set[str]:
    await cluster.initialize()
    return {cluster.nodes_manager.get_node_from_slot(cluster.keyslot(k)).name for k in keys}


async def test_calls_for_many_sales_spread_over_the_masters_and_keep_their_order(
    cluster: RedisCluster,
) -> None:
    lists = [sale_keys(p).line + ":order-test" for p in _product_ids(12)]
    assert len(await _masters_of(cluster, lists)) == 3  # the sales really are on every shard
    pipe = AutoPipeline(cluster, max_batch=32)

    async def append(key: str, i: int) -> int:
        return int(await pipe.execute("EVAL", APPEND, 1, key, str(i)))

    calls = [(lists[i % len(lists)], i) for i in range(240)]
    replies = await asyncio.gather(*(append(key, i) for key, i in calls))
    expected: dict[str, list[int]] = defaultdict(list)
    for (key, i), reply in zip(calls, replies, strict=True):
        expected[key].append(i)
        assert reply == len(expected[key])  # each key's calls ran in the order they were made
    for key, values in expected.items():
        assert [int(v) for v in await cluster.lrange(key, 0, -1)] == values
    assert pipe.batches < len(calls)  # they travelled together, not one by one
    await asyncio.gather(*(cluster.delete(key) for key in lists))


async def test_a_failing_call_fails_only_its_own_caller(cluster: RedisCluster) -> None:
    pipe = AutoPipeline(cluster)
    key = sale_keys(_product_ids(1)[0]).line + ":error-test"
    good, bad = await asyncio.gather(
        pipe.execute("EVAL", APPEND, 1, key, "x"),
        pipe.execute("EVAL", "return redis.call('NOSUCHCOMMAND')", 1, key),
        return_exceptions=True,
    )
    assert good == 1
    assert isinstance(bad, ResponseError) and "unknown command" in str(bad).lower()
    await cluster.delete(key)


async def test_the_sale_functions_run_on_every_shard(cluster: RedisCluster) -> None:
    scripts = SaleScripts(cluster)  # type: ignore[arg-type]
    products = _product_ids(9)
    assert len(await _masters_of(cluster, [sale_keys(p).sale for p in products])) == 3
    # No sale: every function answers on whichever master holds it (loading the library on
    # all masters the first time any of them says it has none).
    infos = await asyncio.gather(*(scripts.info(sale_keys(p)) for p in products))
    assert infos == [{}] * len(products)


async def _replica_client(cluster: RedisCluster, cluster_url: str, key: str) -> Redis:
    await cluster.initialize()
    master = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
    nodes = await cluster.cluster_nodes()
    master_id = nodes[master.name]["node_id"]
    address = next(
        a for a, n in nodes.items() if n["master_id"] == master_id and "slave" in n["flags"]
    )
    host, port = address.rsplit(":", 1)
    return Redis(
        host=host, port=int(port), password=urlsplit(cluster_url).password, decode_responses=True
    )


async def test_a_durable_call_is_on_the_replica_when_its_caller_hears_of_it(
    cluster: RedisCluster, cluster_url: str
) -> None:
    pipe = AutoPipeline(cluster)
    keys = [sale_keys(p).stock + ":durable-test" for p in _product_ids(20)]
    replicas = {k: await _replica_client(cluster, cluster_url, k) for k in keys}
    try:
        for client in replicas.values():
            await client.execute_command("READONLY")
        set_script = "return redis.call('SET', KEYS[1], ARGV[1])"
        await asyncio.gather(
            *(pipe.execute("EVAL", set_script, 1, k, "v", durable=True) for k in keys)
        )
        # Read at once from each key's replica: every write is already there.
        assert [await replicas[k].get(k) for k in keys] == ["v"] * len(keys)
        assert pipe.unreplicated == 0
    finally:
        for client in replicas.values():
            await client.aclose()
        await asyncio.gather(*(cluster.delete(k) for k in keys))
