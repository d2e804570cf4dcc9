"""Kafka at the edges of the order path: the outbox publishes order state changes, and an
order whose order.placed cannot be produced is rolled back without leaking stock."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import DEV_ADMIN_KEY, TOPIC_ORDER_CANCELLED, TOPIC_ORDER_PAID
from infra.settings import Settings
from infra.stack.embedded import EmbeddedStack
from tests.orders.conftest import Worker, identity, place_order, stock_left, stored_count
from tests.support import new_sale, running_shop


async def _events(bootstrap: str, topic: str, order_ids: set[str], timeout_s: float = 30) -> list:
    """The events of `topic` about these orders, read from the beginning."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and {e["order_id"] for e in found} != order_ids:
            batches = await consumer.getmany(timeout_ms=500)
            for message in (m for part in batches.values() for m in part):
                event = orjson.loads(message.value)
                if event["order_id"] in order_ids:
                    found.append(event)
    finally:
        await consumer.stop()
    return found


async def test_paid_and_cancelled_orders_are_published_from_the_outbox(
    shop: httpx.AsyncClient,
    worker: Worker,
    redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    keys = await new_sale(redis, stock=5)
    pid = keys.product_id
    paid_by, cancelled_by = identity(settings, pid, "pia"), identity(settings, pid, "carl")
    to_pay = (await place_order(shop, settings, pid, "pia")).json()
    to_cancel = (await place_order(shop, settings, pid, "carl")).json()
    paid = await shop.post(
        f"/products/{pid}/orders/{to_pay['order_id']}/pay",
        json={"card": "4242424242424242"},
        headers=paid_by,
    )
    assert paid.status_code == 200
    gone = await shop.delete(
        f"/products/{pid}/orders/{to_cancel['order_id']}", headers=cancelled_by
    )
    assert gone.status_code == 200
    (paid_event,) = await _events(settings.kafka_bootstrap, TOPIC_ORDER_PAID, {to_pay["order_id"]})
    (cancel_event,) = await _events(
        settings.kafka_bootstrap, TOPIC_ORDER_CANCELLED, {to_cancel["order_id"]}
    )
    assert (paid_event["status"], paid_event["total"]) == ("paid", 12900)
    assert (cancel_event["status"], cancel_event["cancel_reason"]) == ("cancelled", "user")
    stats = await shop.get(
        f"/admin/sales/{pid}/stats", headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
    )
    assert stats.json()["orders"] == {"pending": 0, "placed": 0, "paid": 1, "cancelled": 1}
    assert (stats.json()["stock_total"], stats.json()["stock_left"]) == (5, 4)


async def test_an_order_that_cannot_be_produced_is_rolled_back(
    redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    keys = await new_sale(redis, stock=3)
    pid = keys.product_id
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedStack(Path(tmp), redis=False, database=False)
        await broker.start()
        local = settings.replace(kafka_bootstrap=broker.kafka_bootstrap)
        async with running_shop(local) as shop:
            await broker.stop()  # the broker is gone for good
            who = {**identity(local, pid, "otto"), "Idempotency-Key": "try-1"}
            refused = await shop.post(f"/products/{pid}/orders", json={"quantity": 1}, headers=who)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "unavailable"
            assert int(refused.headers["retry-after"]) >= 1
    assert await stock_left(redis, keys) == 3  # no stock leaked
    assert await redis.hlen(keys.orders) == 0 and await redis.hlen(keys.idem) == 0
    assert await redis.hlen(keys.bought) == 0 and await redis.zcard(keys.pending) == 0
    assert await stored_count(engine, pid) == 0


async def test_stats_need_the_admin_key_and_a_real_product(shop: httpx.AsyncClient) -> None:
    assert (await shop.get("/admin/sales/whatever/stats")).status_code == 401
    missing = await shop.get(
        "/admin/sales/no-such-sale/stats", headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
    )
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
