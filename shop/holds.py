"""Cancels orders whose payment hold has passed, and gives their units back."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from infra.web.metrics import Metrics
from shop import order_store
from shop.compensation import Compensation


class HoldExpirer:
    def __init__(self, engine: AsyncEngine, compensation: Compensation, metrics: Metrics) -> None:
        self.engine = engine
        self.compensation = compensation
        self.metrics = metrics
        metrics.counter("orders_expired_total", "Unpaid orders cancelled at the end of their hold")

    async def run_once(self) -> int:
        async with self.engine.begin() as conn:
            rows = await order_store.expire_holds(conn)
        if rows:
            await self.compensation.give_back([(row.order_id, row.product_id) for row in rows])
            self.metrics.inc("orders_expired_total", len(rows))
        return len(rows)
