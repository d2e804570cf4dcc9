"""Gives a cancelled order's units back to the Redis stock, exactly once.

PostgreSQL commits the cancellation first; then the units go back (release.lua is idempotent
on the order's record); then the row is marked ``stock_returned``. A crash between the steps
leaves a cancelled, unreturned row, which the worker's sweeper finishes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from infra.sale.keys import SaleKeys
from shop import order_store
from shop.reservations import Reservations

log = logging.getLogger("flashsale.shop")


class Compensation:
    def __init__(self, engine: AsyncEngine, reservations: Reservations) -> None:
        self.engine = engine
        self.reservations = reservations

    async def give_back(self, cancelled: Sequence[tuple[str, str]]) -> None:
        """`cancelled`: (order_id, product_id) pairs whose cancellation has committed."""
        if not cancelled:
            return
        for order_id, product_id in cancelled:
            if await self.reservations.give_back(SaleKeys(product_id), order_id) == "missing":
                # The sale's Redis data is gone (deleted sale): there is no stock to return to.
                log.warning("no reservation record to return stock to: %s", order_id)
        async with self.engine.begin() as conn:
            await order_store.mark_returned(conn, [order_id for order_id, _ in cancelled])

    async def sweep(self) -> int:
        """Finish compensations a crash interrupted. Returns how many it finished."""
        async with self.engine.connect() as conn:
            rows = await order_store.unreturned(conn)
        await self.give_back([(row.order_id, row.product_id) for row in rows])
        return len(rows)
