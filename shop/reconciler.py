"""Re-publishes reservations that PostgreSQL still lacks after a grace period.

The reservation record in Redis is the outbox of order.placed: if the broker loses a message
(a memory-only broker restarting, a lost partition), the order is produced again from its
record, and the idempotent consumer stores it once.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import SALES_KEY, TOPIC_ORDER_PLACED
from infra.sale.keys import SaleKeys
from infra.web.metrics import Metrics
from shop import order_store
from shop.producer import EventProducer
from shop.reservations import Reservations

log = logging.getLogger("flashsale.reconciler")


class Reconciler:
    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        reservations: Reservations,
        producer: EventProducer,
        metrics: Metrics,
        grace_s: float,
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.reservations = reservations
        self.producer = producer
        self.metrics = metrics
        self.grace_s = grace_s
        metrics.counter("orders_republished_total", "Reservations produced again")

    async def run_once(self) -> int:
        """One pass over every sale. Returns how many orders were produced again."""
        cutoff_ms = int((time.time() - self.grace_s) * 1000)
        republished = 0
        for product_id in sorted(await self.redis.smembers(SALES_KEY)):
            keys = SaleKeys(product_id)
            overdue = await self.reservations.overdue(keys, cutoff_ms)
            if not overdue:
                continue
            async with self.engine.connect() as conn:
                present = await order_store.existing_ids(conn, overdue)
            await self.reservations.stored(keys, sorted(present))
            missing = [order_id for order_id in overdue if order_id not in present]
            if not missing:
                continue
            records = await self.redis.hmget(keys.orders, missing)  # one round trip
            for order_id, raw in zip(missing, records, strict=True):
                if raw is None:  # rolled back meanwhile: nothing left to publish
                    await self.redis.zrem(keys.pending, order_id)
                    continue
                await self.producer.publish(TOPIC_ORDER_PLACED, product_id, raw.encode())
                republished += 1
        if republished:
            log.warning("re-published %d order(s) PostgreSQL did not have", republished)
            self.metrics.inc("orders_republished_total", republished)
        return republished
