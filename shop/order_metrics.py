"""The order worker's gauges read at scrape time: orders by status per sale, and the DLQ.

Orders by status is one ``GROUP BY product_id, status`` over the sales the store holds
(``fs:sales``), answered from the ``orders_product_status`` index (an index-only scan: it
reads the index, not the rows), plus one ZCARD per sale for ``pending`` (reservations
PostgreSQL does not have yet), as the admin stats count them. The dead-letter count is a
count of the waiting ones, normally none. Several workers export the same figures: aggregate
with ``max``, never ``sum``.
"""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from infra.web.metrics import Labels, Metrics
from shop.models import dead_letters, orders

ORDER_STATUSES = ("pending", "placed", "paid", "cancelled")  # API.md's order states


class OrderMetrics:
    def __init__(self, redis: Redis, engine: AsyncEngine) -> None:
        self.redis = redis
        self.engine = engine

    def register(self, metrics: Metrics) -> None:
        metrics.gauge("orders", "Orders per sale and status (pending: not yet stored)", self.orders)
        metrics.gauge("dlq_size", "Dead letters waiting for a replay", self.dlq_size)

    async def orders(self) -> dict[Labels, float]:
        product_ids = sorted(await self.redis.smembers(SALES_KEY))
        async with self.redis.pipeline(transaction=False) as pipe:
            for product_id in product_ids:
                pipe.zcard(SaleKeys(product_id).pending)
            pending = await pipe.execute()
        counts = {(p, "pending"): float(n) for p, n in zip(product_ids, pending, strict=True)}
        # Only the sales the store holds: orders of sales long gone (or of another Redis that
        # shared this database) would otherwise keep a series each, for ever.
        query = (
            select(orders.c.product_id, orders.c.status, func.count())
            .where(orders.c.product_id.in_(product_ids))
            .group_by(orders.c.product_id, orders.c.status)
        )
        async with self.engine.connect() as conn:
            for product_id, status, n in (await conn.execute(query)).all():
                counts[(product_id, status)] = float(n)
        # Every status of every sale, zeros included: a rate or a ratio needs the series.
        products = sorted({p for p, _ in counts})
        return {
            (("product", p), ("status", s)): counts.get((p, s), 0.0)
            for p in products
            for s in ORDER_STATUSES
        }

    async def dlq_size(self) -> dict[Labels, float]:
        query = select(func.count()).where(dead_letters.c.replayed_at.is_(None))
        async with self.engine.connect() as conn:
            return {(): float((await conn.execute(query)).scalar_one())}
