"""Publishes the outbox: order.paid and order.cancelled, in commit order, at least once, each
with the request id and traceparent it was written under (the outbox row's headers)."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shop.models import outbox
from shop.producer import EventProducer

RELAY_BATCH = 500


class OutboxRelay:
    def __init__(self, engine: AsyncEngine, producer: EventProducer) -> None:
        self.engine = engine
        self.producer = producer

    async def run_once(self) -> int:
        """Send one batch; the rows are marked only after the broker has them."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(RELAY_BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                # With the request id and trace of the request that wrote it (none: none).
                headers = [(k, str(v).encode()) for k, v in (row.headers or {}).items()]
                await self.producer.publish(row.topic, row.key, row.payload, headers)
            if rows:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_([row.id for row in rows]))
                    .values(published_at=func.now())
                )
        return len(rows)
