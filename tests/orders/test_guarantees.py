"""API.md's guarantees 1-4 under concurrency and crashes, on real Valkey, tansu, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra.constants import DEV_ADMIN_KEY, TOPIC_ORDER_PLACED
from infra.sale.keys import SaleKeys
from infra.settings import Settings
from infra.stack.embedded import EmbeddedStack
from shop.migrate import upgrade
from tests.orders.conftest import (
    Worker,
    eventually,
    identity,
    place_order,
    stock_left,
    stored_count,
)
from tests.support import new_sale, running_shop

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}


async def test_200_buyers_race_for_the_last_10_units(
    shop: httpx.AsyncClient,
    worker: Worker,
    redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    keys = await new_sale(redis, stock=10)
    pid = keys.product_id
    replies = await asyncio.gather(*(place_order(shop, settings, pid, f"b{i}") for i in range(200)))
    statuses = [r.status_code for r in replies]
    assert statuses.count(202) == 10
    assert statuses.count(409) == 190
    assert {r.json()["error"] for r in replies if r.status_code == 409} == {"sold_out"}
    assert await stock_left(redis, keys) == 0
    await eventually(lambda: _stored_is(engine, pid, 10), what="10 orders stored")
    await asyncio.sleep(0.5)
    assert await stored_count(engine, pid) == 10  # and not one more


async def _stored_is(engine: AsyncEngine, pid: str, n: int) -> bool:
    return await stored_count(engine, pid) == n


async def test_the_same_idempotency_key_retried_concurrently_gives_one_order(
    shop: httpx.AsyncClient,
    worker: Worker,
    redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    keys = await new_sale(redis, stock=5, per_user_limit=3)
    pid = keys.product_id
    replies = await asyncio.gather(
        *(
            place_order(shop, settings, pid, "carol", **{"Idempotency-Key": "k-1"})
            for _ in range(25)
        )
    )
    assert {r.status_code for r in replies} == {202}
    assert len({r.json()["order_id"] for r in replies}) == 1
    assert await stock_left(redis, keys) == 4
    # another key is another order; the same key from another visitor is not carol's order
    other = await place_order(shop, settings, pid, "carol", **{"Idempotency-Key": "k-2"})
    dave = await place_order(shop, settings, pid, "dave", **{"Idempotency-Key": "k-1"})
    ids = {replies[0].json()["order_id"], other.json()["order_id"], dave.json()["order_id"]}
    assert len(ids) == 3
    await eventually(lambda: _stored_is(engine, pid, 3), what="3 orders stored")


async def test_a_killed_worker_loses_and_duplicates_nothing(
    shop: httpx.AsyncClient, redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    keys = await new_sale(redis, stock=1000)
    pid = keys.product_id
    accepted = []
    for start in range(0, 1000, 50):
        replies = await asyncio.gather(
            *(place_order(shop, settings, pid, f"k{i}") for i in range(start, start + 50))
        )
        accepted += [r.json()["order_id"] for r in replies if r.status_code == 202]
    assert len(accepted) == 1000
    small_batches = settings.replace(worker_batch=10)
    worker = Worker(small_batches)
    await worker.start()
    try:  # from the first start: a failed wait must not leave a worker consuming behind us
        await eventually(lambda: _stored_at_least(engine, pid, 1), what="first batch stored")
        await worker.kill()  # mid-stream: whatever it had not committed is redelivered
        killed_at = await stored_count(engine, pid)
        await worker.start()
        await eventually(lambda: _stored_is(engine, pid, 1000), what="all orders stored")
    finally:
        await worker.stop()
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT order_id FROM orders WHERE product_id = :p"), {"p": pid}
        )
        assert sorted(rows.scalars()) == sorted(accepted)  # each exactly once
    assert 0 < killed_at < 1000, "the kill should land mid-stream"


async def _stored_at_least(engine: AsyncEngine, pid: str, n: int) -> bool:
    return await stored_count(engine, pid) >= n


async def test_a_broker_restart_loses_no_order(
    redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    """tansu keeps messages in memory: a restart loses them all. The reconciler re-publishes
    every reservation PostgreSQL lacks."""
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedStack(Path(tmp), redis=False, database=False) as broker:
            local = settings.replace(kafka_bootstrap=broker.kafka_bootstrap)
            keys = await new_sale(redis, stock=50)
            pid = keys.product_id
            async with running_shop(local) as shop:
                replies = [await place_order(shop, local, pid, f"r{i}") for i in range(20)]
                assert all(r.status_code == 202 for r in replies)
                tansu = broker.supervisor.child("tansu")
                pid_before = tansu.pid
                assert pid_before is not None
                os.kill(pid_before, signal.SIGKILL)  # every message is gone

                async def restarted() -> bool:
                    return tansu.pid not in (None, pid_before)

                await eventually(restarted, what="broker restarted")
                worker = Worker(local)
                await worker.start()
                try:
                    await eventually(
                        lambda: _stored_is(engine, pid, 20), timeout_s=60, what="all recovered"
                    )
                finally:
                    await worker.stop()
    assert await redis.zcard(keys.pending) == 0


async def test_an_expired_hold_returns_the_stock_and_admission_resumes(
    shop: httpx.AsyncClient,
    worker: Worker,
    redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    keys = await new_sale(redis, stock=1, overbook=1.0)
    pid = keys.product_id
    placed = (await place_order(shop, settings, pid, "erin")).json()
    assert await stock_left(redis, keys) == 0
    assert (await shop.get(f"/products/{pid}", headers=identity(settings, pid, "x"))).json()[
        "state"
    ] == "sold_out"
    await eventually(lambda: _stored_is(engine, pid, 1), what="order stored")
    async with engine.begin() as conn:  # let the hold run out without waiting 10 minutes
        await conn.execute(
            text(
                "UPDATE orders SET hold_expires_at = now() - interval '1 second' "
                "WHERE order_id = :o"
            ),
            {"o": placed["order_id"]},
        )
    path = f"/products/{pid}/orders/{placed['order_id']}"

    async def expired() -> bool:
        body = (await shop.get(path, headers=identity(settings, pid, "erin"))).json()
        return body["status"] == "cancelled" and body["cancel_reason"] == "expired"

    await eventually(expired, what="hold expired")
    await eventually(lambda: _stock_is(redis, keys, 1), what="stock returned")
    info = await shop.get(f"/products/{pid}", headers=identity(settings, pid, "x"))
    assert info.json()["state"] == "open"  # the waiting room admits again
    late = await shop.post(
        f"{path}/pay", json={"card": "4242424242424242"}, headers=identity(settings, pid, "erin")
    )
    assert (late.status_code, late.json()["error"]) == (409, "conflict")


async def _stock_is(redis: Redis, keys: SaleKeys, n: int) -> bool:
    return await stock_left(redis, keys) == n


async def test_a_poison_message_reaches_the_dlq_and_replays(
    shop: httpx.AsyncClient,
    worker: Worker,
    redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    keys = await new_sale(redis, stock=10)
    pid = keys.product_id
    async with engine.begin() as conn:  # the database rejects this product's orders for now
        await conn.execute(text(_REJECT_FN.format(pid=pid)))
        await conn.execute(text(_REJECT_TRIGGER))
    try:
        accepted = await place_order(shop, settings, pid, "frank")
        assert accepted.status_code == 202
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(TOPIC_ORDER_PLACED, b"{not json", key=pid.encode())
        finally:
            await producer.stop()

        async def both_dead() -> bool:
            letters = (await shop.get("/admin/dlq", headers=ADMIN)).json()
            return len([x for x in letters if pid in (x["key"] or "")]) == 2

        await eventually(both_dead, what="two dead letters")
        letters = [
            x
            for x in (await shop.get("/admin/dlq", headers=ADMIN)).json()
            if pid in (x["key"] or "")
        ]
        assert sorted(x["attempts"] for x in letters) == [1, 3]
        assert await stored_count(engine, pid) == 0
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS reject_test_orders ON orders"))
    replay = await shop.post("/admin/dlq/replay", headers=ADMIN)
    assert replay.status_code == 200 and replay.json()["replayed"] >= 2
    await eventually(lambda: _stored_is(engine, pid, 1), what="the replayed order stored")


_REJECT_FN = """
CREATE OR REPLACE FUNCTION reject_test_orders() RETURNS trigger AS $$
BEGIN
  IF NEW.product_id = '{pid}' THEN RAISE EXCEPTION 'rejected for the test'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql
"""
_REJECT_TRIGGER = """
CREATE TRIGGER reject_test_orders BEFORE INSERT ON orders
FOR EACH ROW EXECUTE FUNCTION reject_test_orders()
"""


async def test_the_worker_waits_out_a_database_outage(
    shop: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """PostgreSQL dies under the worker: it retries with backoff, loses nothing, and every
    order lands once the database is back."""
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedStack(Path(tmp), redis=False, kafka=False) as db:
            await upgrade(db.database_url)
            local = settings.replace(database_url=db.database_url)
            keys = await new_sale(redis, stock=100)
            pid = keys.product_id
            postgres = db.supervisor.child("postgres")
            worker = Worker(local)
            await worker.start()
            engine = create_async_engine(db.database_url, pool_pre_ping=True)
            try:
                first = [await place_order(shop, settings, pid, f"d{i}") for i in range(10)]
                await eventually(lambda: _stored_is(engine, pid, 10), what="first orders")
                before = postgres.pid
                assert before is not None
                os.kill(before, signal.SIGKILL)
                # Accepted while the database is down: they wait in Kafka and Redis.
                second = [await place_order(shop, settings, pid, f"e{i}") for i in range(10)]
                assert all(r.status_code == 202 for r in first + second)

                async def all_stored() -> bool:
                    try:
                        return await _stored_is(engine, pid, 20)
                    except (OSError, DBAPIError):
                        return False  # our own check's connection: the database is restarting

                await eventually(all_stored, timeout_s=60, what="all stored")
            finally:
                await engine.dispose()
                await worker.stop()
            assert postgres.restarts >= 1
