"""The order worker process: `python -m shop.worker`.

It owns the consumer of order.placed and the periodic jobs that keep the order path whole:
the reconciler, the hold expirer, the compensation sweeper and the outbox relay. Several
workers may run: the consumer group splits the partitions, and the periodic jobs are safe to
run concurrently (row locks with SKIP LOCKED, idempotent scripts and inserts). Its own port
(FLASHSALE_WORKER_PORT, 8004) answers /healthz and /metrics (shop.worker_http).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.redis import create_redis
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from infra.web.serve import settings_at_edge
from infra.web.trace import tracing_for
from shop.compensation import Compensation
from shop.consumer import OrderConsumer
from shop.deliverer import run_deliverer
from shop.holds import HoldExpirer
from shop.order_metrics import OrderMetrics
from shop.producer import EventProducer
from shop.reconciler import Reconciler
from shop.relay import OutboxRelay
from shop.reservations import Reservations
from shop.worker_http import create_worker_app, serve_http

log = logging.getLogger("flashsale.worker")

RECONCILE_EVERY_S = 2.0
EXPIRE_EVERY_S = 1.0
SWEEP_EVERY_S = 5.0
RELAY_EVERY_S = 0.5
STOP_GRACE_S = 10.0


async def every(interval_s: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    """Run `job` every `interval_s` until cancelled; a failed round is logged and retried."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background loop must outlive one bad round
            log.warning("%s failed: %s: %s", name, type(exc).__name__, exc)
        await asyncio.sleep(interval_s)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    metrics = Metrics("flashsale_worker")
    redis = create_redis(settings.redis_url, max_connections=32)
    engine = create_async_engine(settings.database_url, pool_size=5, pool_pre_ping=True)
    tracing = tracing_for(settings, "flashsale-worker")  # None unless switched on
    producer = EventProducer(settings.kafka_bootstrap, tracing)
    reservations = Reservations(redis, SaleScripts(redis))
    compensation = Compensation(engine, reservations)
    consumer = OrderConsumer(
        settings.kafka_bootstrap,
        engine,
        reservations,
        producer,
        metrics,
        settings.worker_batch,
        tracing=tracing,
    )
    reconciler = Reconciler(
        redis, engine, reservations, producer, metrics, settings.reconcile_grace_s
    )
    jobs = [
        (RECONCILE_EVERY_S, reconciler.run_once, "reconciler"),
        (EXPIRE_EVERY_S, HoldExpirer(engine, compensation, metrics).run_once, "hold expirer"),
        (SWEEP_EVERY_S, compensation.sweep, "compensation sweep"),
        (RELAY_EVERY_S, OutboxRelay(engine, producer).run_once, "outbox relay"),
    ]
    OrderMetrics(redis, engine).register(metrics)
    await producer.start()
    tasks = [asyncio.create_task(every(*job)) for job in jobs]
    consuming = asyncio.create_task(consumer.run(), name="consumer")
    tasks.append(consuming)
    # The webhooks' fan-out and deliveries, with clients of their own (shop.deliverer).
    tasks.append(asyncio.create_task(run_deliverer(settings), name="webhooks"))

    async def health() -> str | None:
        await redis.ping()
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "the consumer has stopped" if consuming.done() else None

    app = create_worker_app(metrics, health)
    tasks.append(asyncio.create_task(serve_http(app, settings), name="http"))
    log.info("order worker running")
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopped}:
            task.result()  # a crashed consumer ends the process: the supervisor restarts it
    finally:
        stopped.cancel()
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        if pending:
            log.warning("%d worker task(s) did not stop in time", len(pending))
        await producer.stop()
        await engine.dispose()
        await redis.aclose()
        if tracing is not None:
            await tracing.shutdown()  # the last spans reach the collector
        log.info("order worker stopped")


def main() -> None:
    settings = settings_at_edge()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
