"""Stores reservations that PostgreSQL still lacks after a grace period, from their records.

The reservation record in Redis is the outbox of order.placed: if the broker loses a message
(a memory-only broker restarting, a lost partition), or no consumer takes it in time (a killed
worker's partitions wait for the broker to notice it is gone), the order is stored from its
record, with the same idempotent insert the consumer uses, so whichever comes second is a
no-op. Storing it here, rather than producing it again, needs neither the broker nor the
consumer group to be back: a broker restart or a group's rebalance costs the grace period,
not however long those take. A record PostgreSQL refuses is produced again instead, so that
the consumer's retries and dead-letter path deal with it, as with any poison message.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra import events
from infra.constants import EVENT_RECONCILE_QUIET_S, SALES_KEY, TOPIC_ORDER_PLACED
from infra.sale.keys import SaleKeys
from infra.web.metrics import Metrics
from shop import order_store
from shop.consumer import is_transient
from shop.producer import EventProducer
from shop.reservations import Reservations

log = logging.getLogger("flashsale.reconciler")


async def _announce(redis: Redis, product_id: str, stored: list[str], refused: list[bytes]) -> None:
    """The webhooks' RECONCILER_REPUBLISHED, bounded and never raising (infra.events). Two
    workers' reconcilers may act on the same overdue orders: the marker is a digest of them,
    so the same work is one event."""
    work = hashlib.sha256("\n".join(sorted(stored)).encode() + b"\n".join(sorted(refused)))
    await events.emit(
        redis,
        events.RECONCILER_REPUBLISHED,
        product_id,
        once=events.sale_marker(product_id, f"reconciled:{work.hexdigest()[:32]}"),
        once_ttl_s=EVENT_RECONCILE_QUIET_S,
        stored=len(stored),
        republished=len(refused),
        order_ids=sorted(stored)[:20],
    )


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
        metrics.counter("orders_recovered_total", "Reservations stored from their records", [])
        metrics.counter("orders_republished_total", "Reservations produced again", [])

    async def run_once(self) -> int:
        """One pass over every sale. Returns how many orders it stored or produced again."""
        cutoff_ms = int((time.time() - self.grace_s) * 1000)
        recovered = republished = 0
        for product_id in sorted(await self.redis.smembers(SALES_KEY)):
            keys = SaleKeys(product_id)
            overdue = await self.reservations.overdue(keys, cutoff_ms)
            if not overdue:
                continue
            records = await self.redis.hmget(keys.orders, overdue)  # one round trip
            rows: list[dict[str, Any]] = []
            raws: list[bytes] = []  # the records of `rows`, as produced
            refused: list[bytes] = []
            gone = []
            for order_id, raw in zip(overdue, records, strict=True):
                if raw is None:  # rolled back meanwhile: nothing left to store
                    gone.append(order_id)
                    continue
                try:
                    rows.append(order_store.row_from_record(order_store.parse_record(raw)))
                    raws.append(raw.encode())
                except order_store.BadRecord:
                    refused.append(raw.encode())
            if gone:
                await self.redis.zrem(keys.pending, *gone)
            if rows and not await self._store(rows):
                refused += raws
                rows = []
            if rows:
                # Stored (by us, or by the consumer before us): off the work list.
                await self.reservations.stored(keys, [row["order_id"] for row in rows])
                recovered += len(rows)
            for raw in refused:
                await self.producer.publish(TOPIC_ORDER_PLACED, product_id, raw)
                republished += 1
            if rows or refused:
                await _announce(self.redis, product_id, [row["order_id"] for row in rows], refused)
        if recovered:
            log.warning("stored %d order(s) the consumer had not stored in time", recovered)
            self.metrics.inc("orders_recovered_total", recovered)
        if republished:
            log.warning("re-published %d order(s) PostgreSQL refused", republished)
            self.metrics.inc("orders_republished_total", republished)
        return recovered + republished

    async def _store(self, rows: list[dict[str, Any]]) -> bool:
        """True once stored; False if PostgreSQL refuses them (not for a passing outage,
        which raises: the round fails and the next one tries again)."""
        try:
            async with self.engine.begin() as conn:
                await order_store.store_placed(conn, rows)
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            return False
        return True
