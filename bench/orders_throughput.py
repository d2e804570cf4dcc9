"""How many orders per second the order worker persists, against a bare batched INSERT.

One run on one machine: N order.placed messages are produced to Kafka first; then
`python -m shop.worker` (as production runs it) consumes them into PostgreSQL. The rate is
taken from PostgreSQL's own `stored_at` column (first to last row), so the consumer group's
join time is not counted. The baseline is the same rows written by the same INSERT … ON
CONFLICT DO NOTHING in batches of the same size, with no Kafka in between.

    .venv/bin/python -m bench.orders_throughput [--orders 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.plot import bar_chart
from infra.constants import TOPIC_ORDER_PLACED
from infra.settings import Settings
from infra.stack.embedded import EmbeddedStack
from shop import order_store
from shop.migrate import upgrade

RESULTS = Path(__file__).parent / "results"


def _records(product_id: str, n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {
            "order_id": "o_" + secrets.token_hex(12),
            "product_id": product_id,
            "visitor_id": f"v{i}",
            "quantity": 1,
            "unit_price": 12900,
            "currency": "EUR",
            "total": 12900,
            "status": "pending",
            "created_ms": now,
            "hold_expires_ms": now + 600_000,
            "idem": "",
        }
        for i in range(n)
    ]


async def _produce(bootstrap: str, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(TOPIC_ORDER_PLACED, orjson.dumps(r), key=r["product_id"].encode())
            for r in records
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _stored_span(database_url: str, product_id: str, n: int, timeout_s: float) -> float:
    engine = create_async_engine(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT count(*), extract(epoch FROM max(stored_at) - "
                            "min(stored_at)) FROM orders WHERE product_id = :p"
                        ),
                        {"p": product_id},
                    )
                ).one()
            if row[0] >= n:
                return float(row[1])
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {row[0]} of {n} orders stored")
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def _bare_inserts(database_url: str, records: list[dict[str, Any]], batch: int) -> float:
    rows = [order_store.row_from_record(r) for r in records]
    engine = create_async_engine(database_url)
    try:
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with engine.begin() as conn:
                await order_store.store_placed(conn, rows[i : i + batch])
        return time.perf_counter() - start
    finally:
        await engine.dispose()


async def run(n: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flashsale-bench-") as tmp:
        async with EmbeddedStack(Path(tmp)) as stack:
            settings = Settings.from_env(
                {},
                dev=True,
                redis_url=os.environ.get("FLASHSALE_REDIS_URL", stack.redis_url),
                database_url=os.environ.get("FLASHSALE_DATABASE_URL", stack.database_url),
                kafka_bootstrap=os.environ.get("FLASHSALE_KAFKA_BOOTSTRAP", stack.kafka_bootstrap),
                worker_batch=batch,
            )
            await upgrade(settings.database_url)
            worker_pid = "bench-" + secrets.token_hex(4)
            records = _records(worker_pid, n)
            await _produce(settings.kafka_bootstrap, records)
            env = {**os.environ, **settings.to_env(), "FLASHSALE_LOG_LEVEL": "warning"}
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shop.worker", env=env
            )
            try:
                span = await _stored_span(settings.database_url, worker_pid, n, timeout_s=300)
            finally:
                worker.send_signal(signal.SIGTERM)
                await worker.wait()
            bare = await _bare_inserts(
                settings.database_url, _records("bare-" + worker_pid, n), batch
            )
    worker_rate = n / max(span, 1e-6)
    bare_rate = n / bare
    return {
        "orders": n,
        "batch": batch,
        "worker_orders_per_s": round(worker_rate),
        "bare_insert_orders_per_s": round(bare_rate),
        "worker_vs_bare": round(worker_rate / bare_rate, 3),
        "machine_cores": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    result = asyncio.run(run(args.orders, args.batch))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "orders_throughput.json").write_text(json.dumps(result, indent=2))
    bar_chart(
        RESULTS / "orders_throughput.svg",
        f"Orders persisted per second ({result['orders']:,} orders, batch {result['batch']})",
        [
            ("order worker (Kafka→PG)", result["worker_orders_per_s"]),
            ("bare batched INSERT", result["bare_insert_orders_per_s"]),
        ],
        "orders/s",
    )
    print(
        f"worker persisted {result['worker_orders_per_s']} orders/s "
        f"(bare batched INSERT: {result['bare_insert_orders_per_s']}/s, "
        f"ratio {result['worker_vs_bare']}) over {result['orders']} orders, "
        f"batch {result['batch']}"
    )


if __name__ == "__main__":
    main()
