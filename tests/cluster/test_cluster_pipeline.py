"""The auto-pipeline and the sale's functions on a real Redis Cluster."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict

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
