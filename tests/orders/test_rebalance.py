"""Order workers joining and leaving the consumer group mid-storm (a rebalance, each time)
lose nothing and store nothing twice."""

from __future__ import annotations

import asyncio

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import TOPIC_ORDER_PLACED
from infra.settings import Settings
from tests.orders.conftest import Worker, eventually, place_order, stored_count
from tests.support import new_sale

ORDERS = 600


async def _partitions(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [topic] = await admin.describe_topics([TOPIC_ORDER_PLACED])
        return len(topic["partitions"])
    finally:
        await admin.close()


async def test_workers_joining_and_leaving_mid_storm_lose_and_double_nothing(
    shop: httpx.AsyncClient, redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    assert await _partitions(settings.kafka_bootstrap) >= 2  # something to share out
    keys = await new_sale(redis, stock=ORDERS)
    pid = keys.product_id
    accepted: list[str] = []
    small = settings.replace(worker_batch=20)  # many batches: the rebalances land mid-stream

    async def storm() -> None:
        for start in range(0, ORDERS, 20):
            replies = await asyncio.gather(
                *(place_order(shop, settings, pid, f"r{i}") for i in range(start, start + 20))
            )
            accepted.extend(r.json()["order_id"] for r in replies if r.status_code == 202)
            await asyncio.sleep(0.05)

    first, second = Worker(small), Worker(small)
    await first.start()
    orders = asyncio.create_task(storm())
    try:
        await eventually(lambda: _at_least(engine, pid, 50), what="the first worker storing")
        await second.start()  # joins the group: the partitions are shared out again
        await eventually(lambda: _at_least(engine, pid, 250), what="both storing")
        await first.stop()  # leaves the group: the second takes its partitions over
        await orders
        await eventually(lambda: _at_least(engine, pid, ORDERS), 60, what="all stored")
    finally:
        orders.cancel()
        await first.stop()
        await second.stop()
    assert len(accepted) == ORDERS
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT order_id FROM orders WHERE product_id = :p"), {"p": pid}
        )
        assert sorted(rows.scalars()) == sorted(accepted)  # each exactly once


async def _at_least(engine: AsyncEngine, pid: str, n: int) -> bool:
    return await stored_count(engine, pid) >= n
