"""The worker's Kafka figures: lag goes up while orders wait in Kafka and back to 0 once they
are stored, and a message that can never be stored shows as the DLQ's size."""

from __future__ import annotations

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.constants import TOPIC_ORDER_PLACED
from tests.ops.platform import Platform
from tests.ops.test_sale_metrics import sample, until
from tests.support import unique_id

WAITING = 7


def lag(text_: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text_)
        for s in family.samples
        if s.name == "flashsale_worker_kafka_consumer_lag"
        and s.labels.get("topic") == TOPIC_ORDER_PLACED
    )


async def test_lag_rises_while_orders_wait_and_falls_when_drained(platform: Platform) -> None:
    worker = "shop.worker"
    engine = create_async_engine(platform.settings.database_url)
    producer = AIOKafkaProducer(bootstrap_servers=platform.settings.kafka_bootstrap)
    await producer.start()
    try:
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:

            async def drained() -> bool:
                return lag(await platform.scrape(http, worker)) == 0

            await until(drained, 30, "no lag before the test")
            before = await platform.scrape(http, worker)
            dlq_before = sample(before, "flashsale_worker_dlq_size")
            dead_before = sample(before, "flashsale_worker_dead_letters_total")
            assert dlq_before is not None and dead_before is not None
            # The worker can read but not write its tables (SHARE blocks INSERT, not SELECT),
            # so what it fetches waits in Kafka, uncommitted, and the scrape still answers.
            async with engine.connect() as lock:
                await lock.execute(text("LOCK TABLE orders, dead_letters IN SHARE MODE"))
                for n in range(WAITING):
                    # Undecodable: each goes to the dead letters once they can be written.
                    key = unique_id("lag").encode()
                    await producer.send_and_wait(TOPIC_ORDER_PLACED, b"not json %d" % n, key=key)

                async def waiting() -> bool:
                    return lag(await platform.scrape(http, worker)) == WAITING

                await until(waiting, 20, f"a lag of {WAITING}")
                await lock.rollback()
            await until(drained, 30, "the lag back to 0 once the tables are writable")
            after = await platform.scrape(http, worker)
            assert sample(after, "flashsale_worker_dlq_size") == dlq_before + WAITING
            assert sample(after, "flashsale_worker_dead_letters_total") == dead_before + WAITING
            async with engine.connect() as conn:
                waiting_letters = await conn.scalar(
                    text("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
                )
            assert sample(after, "flashsale_worker_dlq_size") == waiting_letters
    finally:
        # The session's other tests read the dead letters: these go.
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM dead_letters WHERE key LIKE 'lag-%'"))
        await producer.stop()
        await engine.dispose()
