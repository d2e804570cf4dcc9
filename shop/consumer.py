"""The order worker's consumer: order.placed from Kafka into PostgreSQL, in batches.

Offsets are committed only after the database commit, so a crash redelivers instead of
losing; the insert is idempotent on order_id, so redelivery never duplicates. A transient
database failure is retried with exponential backoff for as long as it lasts. A message that
can never be stored (undecodable, or rejected by the database on every attempt) goes to the
dead-letter topic and table, from where /admin/dlq/replay can send it back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import TOPIC_ORDER_DLQ, TOPIC_ORDER_PLACED
from infra.sale.keys import SaleKeys
from infra.web.metrics import Metrics
from shop import dlq, order_store
from shop.producer import EventProducer
from shop.reservations import Reservations

log = logging.getLogger("flashsale.worker")

CONSUMER_GROUP = "flashsale-order-worker"
POISON_ATTEMPTS = 3
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
# SQLSTATE classes worth waiting out: connection, resources, operator intervention, system,
# and transaction rollbacks (serialization failures, deadlocks).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return sqlstate is None or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


@dataclass
class Letter:
    """One consumed message: its orders row if it decoded, and why it died if it did."""

    message: ConsumerRecord[bytes, bytes]
    row: dict[str, Any] | None
    error: str = ""
    attempts: int = 0

    @property
    def dead(self) -> bool:
        return bool(self.error)

    @property
    def value(self) -> str:
        return (self.message.value or b"").decode("utf-8", "replace")

    @property
    def key(self) -> str | None:
        return self.message.key.decode("utf-8", "replace") if self.message.key else None


class OrderConsumer:
    def __init__(
        self,
        bootstrap: str,
        engine: AsyncEngine,
        reservations: Reservations,
        producer: EventProducer,
        metrics: Metrics,
        batch: int = 500,
    ) -> None:
        self.bootstrap = bootstrap
        self.batch = batch
        self.engine = engine
        self.reservations = reservations
        self.producer = producer
        self.metrics = metrics
        metrics.counter("orders_stored_total", "order.placed messages stored in PostgreSQL")
        metrics.counter("dead_letters_total", "Messages sent to the dead-letter topic")

    async def run(self) -> None:
        """Consume until cancelled."""
        consumer = AIOKafkaConsumer(
            TOPIC_ORDER_PLACED,
            bootstrap_servers=self.bootstrap,
            group_id=CONSUMER_GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=self.batch)
                messages = [m for part in batches.values() for m in part]
                if messages:
                    await self.handle(messages)
                    await consumer.commit()  # only now: the batch is in PostgreSQL
        finally:
            await consumer.stop()

    async def handle(self, messages: list[ConsumerRecord[bytes, bytes]]) -> None:
        letters = []
        for message in messages:
            try:
                row = order_store.row_from_record(order_store.parse_record(message.value or b""))
                letters.append(Letter(message, row))
            except order_store.BadRecord as exc:
                letters.append(Letter(message, None, f"undecodable: {exc}", 1))
        await self._store(letters)
        dead = [letter for letter in letters if letter.dead]
        for letter in dead:
            await self._publish_dead(letter)
        # Stored orders, and dead-lettered ones too, leave the reconciler's work list: the
        # first are safe, the second wait for an operator's replay, not for a re-publish.
        done: dict[str, list[str]] = defaultdict(list)
        for letter in letters:
            if letter.row is not None:
                done[letter.row["product_id"]].append(letter.row["order_id"])
        for product_id, order_ids in done.items():
            await self.reservations.stored(SaleKeys(product_id), order_ids)
        self.metrics.inc("orders_stored_total", len(letters) - len(dead))
        self.metrics.inc("dead_letters_total", len(dead))

    async def _store(self, letters: list[Letter]) -> None:
        """Store the good rows and the dead letters in one transaction, retrying transient
        failures; a batch the database rejects is split to find the rows it rejects."""
        delay = BACKOFF_START_S
        while True:
            try:
                await self._write(letters)
                return
            except Exception as exc:
                if is_transient(exc):
                    log.warning("database unavailable (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                if not isinstance(exc, DBAPIError):
                    raise
                await self._isolate(letters)

    async def _write(self, letters: list[Letter]) -> None:
        async with self.engine.begin() as conn:
            await order_store.store_placed(conn, [x.row for x in letters if not x.dead and x.row])
            for x in letters:
                if x.dead:
                    order_id = x.row["order_id"] if x.row else None
                    await dlq.record(
                        conn, TOPIC_ORDER_PLACED, x.key, x.value, x.error, x.attempts, order_id
                    )

    async def _isolate(self, letters: list[Letter]) -> None:
        """Try each row alone, up to POISON_ATTEMPTS times; those that always fail become
        dead letters, so the next write of the batch succeeds."""
        for letter in letters:
            if letter.dead or letter.row is None:
                continue
            error = ""
            for attempt in range(1, POISON_ATTEMPTS + 1):
                try:
                    async with self.engine.begin() as conn:
                        await order_store.store_placed(conn, [letter.row])
                    break
                except DBAPIError as exc:
                    if is_transient(exc):
                        raise
                    error, letter.attempts = f"rejected: {exc.orig}", attempt
                    await asyncio.sleep(BACKOFF_START_S * 2**attempt)
            else:
                log.error("order.placed dead-lettered after %d attempts", letter.attempts)
                letter.error = error

    async def _publish_dead(self, letter: Letter) -> None:
        try:
            await self.producer.publish(TOPIC_ORDER_DLQ, letter.key or "", letter.value.encode())
        except Exception as exc:  # the table is the record; the topic is for Kafka tooling
            log.warning("dead letter not produced to %s: %s", TOPIC_ORDER_DLQ, type(exc).__name__)
