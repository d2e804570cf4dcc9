"""A slow or dead receiver never slows a sale: joins, admission ticks and the admin API take
as long with one as without, and the healthy receivers keep getting their events. And the
deliverer as production runs it, inside `python -m shop.worker`."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra import events
from infra.constants import (
    EVENTS_GROUP,
    EVENTS_STREAM_KEY,
    TOPIC_ORDER_PLACED,
    WEBHOOK_TIMEOUT_S,
)
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from queue_server.app import create_app as create_queue
from scheduler.admission import Admissions
from tests.orders.conftest import Worker
from tests.shop.helpers import ADMIN
from tests.support import new_sale, running
from tests.token_gate.conftest import free_port
from tests.webhooks.conftest import (
    DELIVERY_TIMEOUT_S,
    Receiver,
    Subscribe,
    attempts,
    delivering,
    no_dead_letters,
    receiving,
)
from token_gate.codec import TokenCodec

JOINS = 40
TICKS = 20
TOGGLES = 10  # pause + resume pairs: two events each


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def _workload(
    queue: httpx.AsyncClient, shop: httpx.AsyncClient, admissions: Admissions, pid: str
) -> dict[str, list[float]]:
    """A sale's own work and the operator's, each call timed."""
    took: dict[str, list[float]] = {"join": [], "tick": [], "admin": []}

    async def join() -> None:
        reply = await queue.post(f"/queue/{pid}/join")
        assert reply.status_code in (200, 201), reply.text

    async def admin(action: str) -> None:
        reply = await shop.post(f"/admin/sales/{pid}/{action}", headers=ADMIN)
        assert reply.status_code == 200, reply.text

    for n in range(JOINS):
        took["join"].append(await _timed(join))
        if n % 2 == 0:
            took["tick"].append(await _timed(lambda n=n: admissions.tick(pid, n, 10)))
    for _ in range(TOGGLES):
        for action in ("pause", "resume"):
            took["admin"].append(await _timed(lambda a=action: admin(a)))
        reply = await shop.get(f"/admin/sales/{pid}/stats", headers=ADMIN)
        assert reply.status_code == 200
    return took


def _summary(took: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """(median, max) in ms, per kind of call."""
    return {kind: (statistics.median(ts) * 1000, max(ts) * 1000) for kind, ts in took.items() if ts}


@contextlib.asynccontextmanager
async def _deliverer_in(
    where: str, redis: Redis, engine: AsyncEngine, settings: Settings
) -> AsyncIterator[float]:
    """The deliverer in this very loop (sharing it with the sale's apps: the harsher case),
    or in the order worker's own process, as production runs it. Yields its attempt timeout."""
    if where == "this_loop":
        async with delivering(redis, engine):
            yield DELIVERY_TIMEOUT_S
        return
    worker_settings = settings.replace(worker_port=free_port())
    worker = Worker(worker_settings)
    await worker.start()
    try:
        assert worker.process is not None
        await _ready(redis, worker.process.pid)  # its start-up is not what is measured
        yield WEBHOOK_TIMEOUT_S
    finally:
        await worker.stop()


async def _ready(redis: Redis, pid: int) -> None:
    """Until the worker's deliverer reads the event stream (a consumer of its group named
    after the worker's pid), and a second more for its start-up's CPU to settle."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(ResponseError):  # no group yet
            consumers = await redis.xinfo_consumers(EVENTS_STREAM_KEY, EVENTS_GROUP)
            if any(f"-{pid}-" in c["name"] for c in consumers):
                break
        assert time.monotonic() < deadline, "the worker's deliverer never read the stream"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)


# The median bound: (times the median without webhooks, plus ms).
WHERE = {"this_loop": (8, 50), "the_worker": (4, 20)}


@pytest.mark.parametrize("where", list(WHERE))
async def test_slow_and_dead_receivers_slow_neither_a_sale_nor_the_admin_api(
    shop: httpx.AsyncClient,
    subscribe: Subscribe,
    events_redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
    where: str,
) -> None:
    factor, plus_ms = WHERE[where]
    codec = TokenCodec(settings.secret_keys)
    admissions = Admissions(events_redis, SaleScripts(events_redis), codec, Metrics("iso"))
    async with (
        running(create_queue(settings)) as queue,
        _deliverer_in(where, events_redis, engine, settings) as timeout_s,
    ):
        before_pid = (await new_sale(events_redis, stock=1000, batch_size=2)).product_id
        before = _summary(await _workload(queue, shop, admissions, before_pid))

        async with receiving(delay_s=30.0) as slow, receiving() as healthy:
            dead_url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
            slow_hook = await subscribe(slow.url + "/slow")
            dead = await subscribe(dead_url)
            await subscribe(healthy.url + "/ok")
            pid = (await new_sale(events_redis, stock=1000, batch_size=2)).product_id
            start = time.monotonic()
            during = _summary(await _workload(queue, shop, admissions, pid))
            # The healthy receiver hears every pause and resume meanwhile, though the slow
            # one holds its every lane for a whole timeout per attempt.
            paused = await healthy.wait_for(events.SALE_PAUSED, pid, count=TOGGLES, timeout_s=15)
            await healthy.wait_for(events.SALE_RESUMED, pid, count=TOGGLES, timeout_s=15)
            healthy_last_s = max(r.at for r in paused) - start
            assert slow.got  # it was being called (with the earlier sale's events first)
            await asyncio.sleep(timeout_s + 1)  # the slow one's first attempts run out
            dead_attempts = await attempts(shop, dead["id"])
            slow_attempts = await attempts(shop, slow_hook["id"])
    print(f"\ndeliverer in {where}; without webhooks (median, max ms): {before}")
    print(f"with a 30 s receiver and a dead port: {during}")
    print(f"the healthy receiver had every pause {healthy_last_s:.2f} s after the start")
    for kind, (median, worst) in during.items():
        base_median = before[kind][0]
        # Sensible bounds on a shared 2-core machine: no call waits for a receiver (an
        # attempt's deadline is `timeout_s`, and the slow one answers after 30 s), and the
        # typical call is not more than a few times its time without webhooks.
        assert worst < min(timeout_s, 1.0) * 1000, (kind, worst)
        assert median < base_median * factor + plus_ms, (kind, median, base_median)
    assert any(a["error"] and "Connect" in a["error"] for a in dead_attempts), dead_attempts
    cut = [a for a in slow_attempts if a["error"] and "no complete answer" in a["error"]]
    assert cut and all(a["duration_ms"] < timeout_s * 1000 + 500 for a in cut), slow_attempts


async def test_the_order_workers_own_deliverer_announces_a_dead_letter(
    subscribe: Subscribe,
    receiver: Receiver,
    events_redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    """`python -m shop.worker` runs the deliverer: a poison message goes to the dead-letter
    queue, and the receiver hears that the queue is no longer empty, signed."""
    hook = await subscribe(receiver.url, events=["dlq.non_empty"])
    await no_dead_letters(engine)
    await events_redis.set(events.global_marker("dlq_non_empty"), "0")
    worker = Worker(settings.replace(worker_port=free_port()))
    await worker.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(TOPIC_ORDER_PLACED, b"{poison", key=b"webhooks-dlq")
        finally:
            await producer.stop()
        got = await receiver.wait_for(events.DLQ_NON_EMPTY, timeout_s=60)
    finally:
        await worker.stop()
    assert got[0].verifies(hook["secret"])
    assert got[0].json()["data"]["waiting"] >= 1
