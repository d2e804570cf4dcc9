"""A consumer whose positions are past the end of its partitions' logs, as after a broker that
lost its log came back (tansu's memory storage): tansu then answers its fetches with nothing and
no error, so it must notice by itself and start those partitions again, or it stores nothing
until the new log grows past its old positions. Real tansu, Valkey and PostgreSQL."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from shop.consumer import POSITION_CHECK_S
from tests.orders.conftest import eventually, place_order, stored_count
from tests.orders.test_trace import order_consumer
from tests.support import new_sale


async def test_a_consumer_past_the_end_of_the_log_starts_it_again(
    shop: httpx.AsyncClient, redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    keys = await new_sale(redis, stock=3)
    pid = keys.product_id
    async with order_consumer(settings) as worker:
        placed = await place_order(shop, settings, pid, "ada")
        assert placed.status_code == 202, placed.text

        async def stored(n: int) -> bool:
            return await stored_count(engine, pid) >= n

        await eventually(lambda: stored(1), timeout_s=60, what="the first order stored")
        consumer = worker._consumer
        assert consumer is not None
        # What the broker's restart leaves: the same assignment, positions from the old log,
        # each far past the end of the new one.
        assigned = sorted(consumer.assignment())
        assert assigned
        for tp in assigned:
            consumer.seek(tp, await consumer.position(tp) + 10_000)
        placed = await place_order(shop, settings, pid, "bob")
        assert placed.status_code == 202, placed.text
        # Stored by the consumer (no reconciler runs here) within a check or two.
        await eventually(
            lambda: stored(2), timeout_s=3 * POSITION_CHECK_S + 5, what="the order after the seek"
        )
        for tp in assigned:
            assert await consumer.position(tp) <= (consumer.highwater(tp) or 0)
