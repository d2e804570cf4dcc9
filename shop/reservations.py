"""The Redis half of an order: reserve, roll back, give units back, mark stored."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis

from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts

STORED_SLICE = 500  # order ids per stored.lua call


class Reservations:
    def __init__(self, redis: Redis, scripts: SaleScripts) -> None:
        self.redis = redis
        self.scripts = scripts

    async def reserve(
        self, keys: SaleKeys, visitor_id: str, quantity: int, order_id: str, idem: str
    ) -> list[Any]:
        # Durable: once the shop has this reply it publishes the order, so on a Redis Cluster
        # the reservation must be on a replica first, or a master that crashed right after
        # would leave an order whose unit its successor never took (and would sell again).
        return await self.scripts.run(
            "order",
            keys,
            keys.order_keys(),
            [visitor_id, quantity, order_id, idem, keys.product_id],
            durable=True,
        )

    async def record(self, keys: SaleKeys, order_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(keys.orders, order_id)
        return orjson.loads(raw) if raw else None

    async def rollback(self, keys: SaleKeys, order_id: str) -> str:
        """Forget a reservation whose order.placed never left: its units and Idempotency-Key
        are free again."""
        return await self.scripts.run("release", keys, keys.order_keys(), [order_id, "rollback"])

    async def give_back(self, keys: SaleKeys, order_id: str) -> str:
        """Compensation of a cancelled order; idempotent."""
        return await self.scripts.run("release", keys, keys.order_keys(), [order_id, "cancelled"])

    async def stored(self, keys: SaleKeys, order_ids: list[str]) -> int:
        # In slices: one script blocks Redis while it runs, and the line's polls wait behind
        # it. A slice of 500 runs in about a millisecond; the slices still share a pipeline.
        slices = [order_ids[i : i + STORED_SLICE] for i in range(0, len(order_ids), STORED_SLICE)]
        changed = await asyncio.gather(
            *(self.scripts.run("stored", keys, keys.order_keys(), ids) for ids in slices)
        )
        return sum(changed)

    async def overdue(self, keys: SaleKeys, older_than_ms: int, limit: int = 500) -> list[str]:
        """Reservations still pending since before `older_than_ms` (unix ms)."""
        return await self.redis.zrange(
            keys.pending, "-inf", older_than_ms, byscore=True, offset=0, num=limit
        )
