"""Helpers shared by the tests: sales with unique ids, apps with their lifespan running, an app
served by a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.types import ASGIApp

from infra.constants import HEADER_GATE_SECRET
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from infra.web.serve import uvicorn_options
from scheduler.admission import Admissions
from shop.app import create_app as create_shop
from shop.sales import create_sale
from token_gate.codec import TokenCodec


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def sale_body(**overrides: Any) -> dict[str, Any]:
    """An open FIFO sale by default: started a second ago, admitting by hand in tests."""
    body: dict[str, Any] = {
        "id": unique_id(),
        "name": "Test sneaker",
        "price": 12900,
        "currency": "EUR",
        "stock": 100,
        "sale_start": iso_in(-1),
        "queue_mode": "fifo",
        "batch_size": 10,
        "interval_s": 1.0,
    }
    body.update(overrides)
    return body


async def new_sale(redis: Redis, opened: bool = True, **overrides: Any) -> SaleKeys:
    """Create a sale; one whose start has passed is open (a sale created after its start is
    open at once). With `opened` false, the sale is created in its pre-queue and then its
    start comes, as if by the clock, without a scheduler to open it: its line is still a
    pre-queue, whose visitors are early, until `open_sale`."""
    scripts = SaleScripts(redis)
    if opened:
        return await create_sale(redis, scripts, sale_body(**overrides))
    body = sale_body(**overrides)
    start_ms = int(datetime.fromisoformat(body["sale_start"]).timestamp() * 1000)
    body.update(sale_start=iso_in(3600), prequeue_s=7200)
    keys = await create_sale(redis, scripts, body)
    await redis.hset(keys.sale, "start_ms", start_ms)  # the clock moves on to the start
    return keys


async def open_sale(redis: Redis, product_id: str) -> str:
    # open() mints nothing, so any codec will do
    admissions = Admissions(redis, SaleScripts(redis), TokenCodec(("x" * 16,)), Metrics("t"))
    return await admissions.open(product_id)


@contextlib.asynccontextmanager
async def running(
    app: Starlette, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to `app` in-process, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """`app` under a real uvicorn in this loop, with its lifespan (a failing startup fails the
    test), on a socket bound before the server starts (no port race); yields its base URL."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and with proto 0 every kept-alive answer (head and body written apart) waited out
    # Nagle and the client's delayed ACK, 40 ms each.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The production server (its protocol with the read deadline and size caps, no proxy
    # headers: uvicorn's default would take X-Forwarded-For from 127.0.0.1 as the client),
    # quieter, and quick to stop.
    options = uvicorn_options(Settings.from_env({}, dev=True), 0)
    for name in ("host", "port"):
        del options[name]
    options |= {"log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 2}
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task  # raises why it could not start
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def running_shop(
    settings: Settings, *, gate: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """The shop in-process (`running`), once its Kafka producer is connected: a test's first
    order must not wait for it, and stopping the shop must never cancel a producer mid-start.
    `gate`: the client sends the gate's secret, as the gate does, so the orders API answers."""
    app = create_shop(settings)
    async with running(app) as client:
        await app.state.ctx.producer.wait_connected(30)
        if gate:
            client.headers[HEADER_GATE_SECRET] = settings.gate_secrets()[0]
        yield client


@contextlib.asynccontextmanager
async def serving_shop(settings: Settings) -> AsyncIterator[str]:
    """The real shop under uvicorn (`serving`), its Kafka producer connected."""
    app = create_shop(settings)
    async with serving(app) as url:
        await app.state.ctx.producer.wait_connected(30)
        yield url
