"""Dead letters: order.placed messages the worker could not store after its retries.

They are produced to the dead-letter topic (for Kafka tooling) and kept in PostgreSQL, which
is what `/admin/dlq` lists and `/admin/dlq/replay` sends back to their topic.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.sale.views import iso_utc
from shop.models import dead_letters
from shop.producer import EventProducer

LIST_LIMIT = 500


async def record(
    conn: AsyncConnection,
    topic: str,
    key: str | None,
    value: str,
    error: str,
    attempts: int,
    order_id: str | None = None,
) -> None:
    """Keep a dead letter; a second copy of an order already waiting here is dropped."""
    await conn.execute(
        insert(dead_letters)
        .values(
            topic=topic,
            key=key,
            order_id=order_id,
            value=value,
            error=error[:2000],
            attempts=attempts,
        )
        .on_conflict_do_nothing(
            index_elements=["order_id"],
            index_where=text("replayed_at IS NULL AND order_id IS NOT NULL"),
        )
    )


async def waiting(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(dead_letters)
        .where(dead_letters.c.replayed_at.is_(None))
        .order_by(dead_letters.c.id)
        .limit(LIST_LIMIT)
    )
    return [
        {
            "id": row.id,
            "topic": row.topic,
            "key": row.key,
            "value": row.value,
            "error": row.error,
            "attempts": row.attempts,
            "created_at": iso_utc(int(row.created_at.timestamp() * 1000)),
        }
        for row in rows
    ]


async def replay(engine: AsyncEngine, producer: EventProducer) -> int:
    """Send every waiting dead letter back to its topic; each is marked once it is sent."""
    sent = 0
    while True:
        async with engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(dead_letters)
                    .where(dead_letters.c.replayed_at.is_(None))
                    .order_by(dead_letters.c.id)
                    .limit(100)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return sent
            for row in rows:
                await producer.publish(row.topic, row.key or "", row.value.encode())
            await conn.execute(
                update(dead_letters)
                .where(dead_letters.c.id.in_([row.id for row in rows]))
                .values(replayed_at=func.now())
            )
            sent += len(rows)
