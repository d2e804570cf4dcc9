"""One order followed from the gate to the order worker, on real Valkey, tansu and PostgreSQL:
its request id and trace reach the worker's log lines, and with OpenTelemetry on, its spans
(the gate's, the shop's, the Kafka send's and the worker's) make one trace.

The gate, the shop (under uvicorn: the gate calls it over TCP) and the order consumer run in
this test's process, so that in-memory exporters see every span of all three."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra.constants import TOPIC_ORDER_PAID
from infra.redis import create_redis
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.logs import _JsonFormatter
from infra.web.metrics import Metrics
from infra.web.trace import parse_traceparent
from infra.web.tracing import Tracing
from shop.app import create_app as create_shop
from shop.consumer import OrderConsumer
from shop.producer import EventProducer
from shop.relay import OutboxRelay
from shop.reservations import Reservations
from tests.orders.conftest import eventually, identity, place_order, stored_count
from tests.support import new_sale, running, serving, unique_id
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


@contextlib.contextmanager
def worker_lines() -> Iterator[io.StringIO]:
    """The order worker's log lines, as its process writes them (the platform's JSON
    formatter), at debug: the level at which it says, per order, that it stored it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter())
    logger = logging.getLogger("flashsale.worker")
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def lines_about(stream: io.StringIO, order_id: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line.get("order_id") == order_id]


@contextlib.asynccontextmanager
async def order_consumer(
    settings: Settings, tracing: Tracing | None = None
) -> AsyncIterator[OrderConsumer]:
    """The worker's consumer of order.placed, as `python -m shop.worker` runs it."""
    redis = create_redis(settings.redis_url)

    engine = create_async_engine(settings.database_url, pool_size=2)
    producer = EventProducer(settings.kafka_bootstrap, tracing)
    consumer = OrderConsumer(
        settings.kafka_bootstrap,
        engine,
        Reservations(redis, SaleScripts(redis)),
        producer,
        Metrics("flashsale_worker"),
        batch=2_000,
        tracing=tracing,
        # A group of its own: it joins at once, whoever else (a worker another test killed)
        # is still a member of the workers' group. It reads order.placed from its start;
        # storing an order again is a no-op.
        group=unique_id("trace-worker"),
    )
    await producer.start()
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()
        await engine.dispose()
        await redis.aclose()


async def test_the_workers_lines_for_an_order_carry_its_request_id_and_trace(
    shop: httpx.AsyncClient, redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    """Tracing off (the default): the ids travel by hand, shop -> Kafka headers -> worker."""
    keys = await new_sale(redis, stock=3)
    pid = keys.product_id
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    with worker_lines() as stream:
        async with order_consumer(settings):
            placed = await place_order(
                shop, settings, pid, "ada", **{"X-Request-Id": "order-rid-1"},
                traceparent=traceparent,
            )  # fmt: skip
            assert placed.status_code == 202, placed.text
            assert placed.headers["x-request-id"] == "order-rid-1"
            order_id = placed.json()["order_id"]

            async def logged() -> bool:
                return bool(lines_about(stream, order_id))

            await eventually(logged, timeout_s=60, what="the worker's line about the order")
    assert await stored_count(engine, pid) == 1
    [line] = lines_about(stream, order_id)
    assert line["msg"] == "order.placed stored"
    assert (line["request_id"], line["trace_id"]) == ("order-rid-1", CLIENT_TRACE)


def _tree(spans: tuple[ReadableSpan, ...], trace_id: int) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans if s.context.trace_id == trace_id}


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_one_order_from_the_gate_to_the_worker_is_one_trace(
    redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    # One exporter each: a process's tracing shuts its exporter down with its lifespan (the
    # gate's ends first), as each process of the platform has its own.
    exporters = {name: InMemorySpanExporter() for name in ("gate", "shop", "worker")}
    tracings = {
        name: Tracing(f"flashsale-{name}", exporter, batch=False)
        for name, exporter in exporters.items()
    }

    def finished() -> tuple[ReadableSpan, ...]:
        return tuple(s for e in exporters.values() for s in e.get_finished_spans())

    keys = await new_sale(redis, stock=3)
    pid = keys.product_id
    token = TokenCodec(settings.secret_keys).mint_access("grace", pid, int(time.time()) + 300)
    shop_app = create_shop(settings, tracing=tracings["shop"])
    with worker_lines() as stream:
        async with serving(shop_app) as shop_url, order_consumer(settings, tracings["worker"]):
            await shop_app.state.ctx.producer.wait_connected(30)
            gate_app = create_gate(
                settings.replace(shop_upstream_url=shop_url), tracing=tracings["gate"]
            )
            async with running(gate_app) as gate:
                placed = await gate.post(
                    f"/products/{pid}/orders?token={token}",  # a token in the query, too
                    json={"quantity": 1},
                    headers={"Authorization": f"Bearer {token}"},
                )
            assert placed.status_code == 202, placed.text
            order_id = placed.json()["order_id"]
            rid = placed.headers["x-request-id"]

            def consumed() -> list[ReadableSpan]:
                return [s for s in finished() if s.kind == SpanKind.CONSUMER]

            async def worker_done() -> bool:
                return any(s.attributes.get("flashsale.order_id") == order_id for s in consumed())

            await eventually(worker_done, timeout_s=60, what="the worker's span of the order")
    spans = finished()
    [gate_server] = [
        s for s in spans if s.resource.attributes["service.name"] == "flashsale-gate"
        and s.kind == SpanKind.SERVER
    ]  # fmt: skip
    trace_id = gate_server.context.trace_id
    # The gate started the trace (the client sent none), so its request id is the trace id.
    assert rid == f"{trace_id:032x}"
    by_id = _tree(spans, trace_id)
    [worker] = [s for s in by_id.values() if s.kind == SpanKind.CONSUMER]
    chain = _ancestors(worker, by_id)
    # Worker <- Kafka send <- shop's request <- gate's call to the shop <- gate's request.
    assert [(s.resource.attributes["service.name"], s.kind, s.name) for s in chain] == [
        ("flashsale-shop", SpanKind.PRODUCER, "send order.placed"),
        ("flashsale-shop", SpanKind.SERVER, "POST /products/{product_id}/orders"),
        ("flashsale-gate", SpanKind.CLIENT, "POST"),
        ("flashsale-gate", SpanKind.SERVER, "POST /products/{product_id}/orders"),
    ]
    assert chain[-1] is gate_server and gate_server.parent is None
    assert worker.name == "process order.placed"
    assert worker.attributes["flashsale.order_id"] == order_id
    assert worker.attributes["flashsale.request_id"] == rid
    assert gate_server.attributes["http.response.status_code"] == 202
    # What the worker logged about the order carries the same request id and trace.
    [line] = lines_about(stream, order_id)
    assert (line["request_id"], line["trace_id"]) == (rid, f"{trace_id:032x}")
    # No span holds the access token, the gate's secret or a raw path with its ids.
    secrets = (token, settings.gate_secrets()[0], settings.admin_key, *settings.secret_keys)
    for span in spans:
        shown = [span.name, *map(str, span.attributes.values())]
        shown += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        assert not any(secret in text for secret in secrets for text in shown), span.name
        assert not any(pid in text and "?" in text for text in shown), shown
        assert "token=" not in " ".join(shown)
    assert not any(pid in s.name for s in spans)  # span names are route templates


async def test_the_outbox_events_carry_the_request_id_and_trace_of_their_request(
    shop: httpx.AsyncClient, redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    """order.paid leaves later, from the worker's relay: the paying request's id and trace
    are kept with the outbox row and go out in the event's headers."""
    keys = await new_sale(redis, stock=3)
    pid = keys.product_id
    placed = await place_order(shop, settings, pid, "lin")
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    paying = {
        **identity(settings, pid, "lin"),
        "X-Request-Id": "pay-rid-1",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
    }
    paid = await shop.post(
        f"/products/{pid}/orders/{order_id}/pay", json={"card": "4242424242424242"}, headers=paying
    )
    assert paid.status_code == 200, paid.text
    async with EventProducer(settings.kafka_bootstrap) as producer:
        await producer.wait_connected(30)
        relay = OutboxRelay(engine, producer)
        while await relay.run_once():  # every unsent event, this one among them
            pass
    consumer = AIOKafkaConsumer(
        TOPIC_ORDER_PAID, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        found: dict[str, bytes] | None = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for message in (m for part in batches.values() for m in part):
                if orjson.loads(message.value or b"{}").get("order_id") == order_id:
                    found = dict(message.headers)
    finally:
        await consumer.stop()
    assert found is not None, "order.paid not found"
    assert found["x-request-id"] == b"pay-rid-1"
    assert parse_traceparent(found["traceparent"]) == parse_traceparent(paying["traceparent"])
