"""A webhook receiver on loopback (a real HTTP server this test starts), the shop's admin API,
and the deliverer as the order worker runs it, with short timeouts and backoffs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.constants import EVENTS_GROUP, EVENTS_STREAM_KEY
from infra.settings import Settings
from shop.deliverer import Deliverer, http_client
from tests.shop.helpers import ADMIN
from tests.support import running_shop, serving

DELIVERY_TIMEOUT_S = 1.0
BACKOFF_BASE_S = 0.3


@dataclass
class Received:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def verifies(self, secret: str) -> bool:
        """What the README tells a receiver to do."""
        timestamp = self.headers["x-flashsale-timestamp"]
        expected = hmac.new(
            secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256
        ).hexdigest()
        sent = self.headers["x-flashsale-signature"].removeprefix("sha256=")
        fresh = abs(time.time() - int(timestamp)) < 300
        return fresh and hmac.compare_digest(expected, sent)


@dataclass
class Receiver:
    """Answers every POST with `status` after `delay_s`, and keeps what it got."""

    url: str = ""
    status: int = 200
    delay_s: float = 0.0
    got: list[Received] = field(default_factory=list)

    def of(self, kind: str, product_id: str | None = None) -> list[Received]:
        return [
            r
            for r in self.got
            if r.headers.get("x-flashsale-event") == kind
            and (product_id is None or r.json().get("product_id") == product_id)
        ]

    async def wait_for(
        self, kind: str, product_id: str | None = None, count: int = 1, timeout_s: float = 20.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.of(kind, product_id)) < count:
            if time.monotonic() > deadline:
                seen = [r.headers.get("x-flashsale-event") for r in self.got]
                raise AssertionError(f"{count} x {kind} ({product_id}) not received; got {seen}")
            await asyncio.sleep(0.05)
        return self.of(kind, product_id)


def receiver_app(receiver: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        body = await request.body()
        receiver.got.append(
            Received(time.monotonic(), request.url.path, dict(request.headers), body)
        )
        if receiver.delay_s:
            try:
                await asyncio.sleep(receiver.delay_s)
            except asyncio.CancelledError:  # the test's end: no traceback in its log
                return Response(b"", 503)
        return Response(b"nope" if receiver.status >= 400 else b"ok", receiver.status)

    return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


@contextlib.asynccontextmanager
async def receiving(**options: Any) -> AsyncIterator[Receiver]:
    receiver = Receiver(**options)
    async with serving(receiver_app(receiver)) as url:
        receiver.url = url
        yield receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as r:
        yield r


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    return stack_settings


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def shop(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The shop's admin API (and, with the gate's secret, its orders), in-process."""
    async with running_shop(settings, gate=True) as client:
        yield client


Subscribe = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def subscribe(shop: httpx.AsyncClient) -> AsyncIterator[Subscribe]:
    """POST /admin/webhooks; every webhook made is deleted after the test, so that later tests'
    events do not go on to this test's receivers."""
    made: list[str] = []

    async def create(url: str, **body: Any) -> dict[str, Any]:
        reply = await shop.post("/admin/webhooks", json={"url": url, **body}, headers=ADMIN)
        assert reply.status_code == 201, reply.text
        made.append(reply.json()["id"])
        return reply.json()

    yield create
    for webhook_id in made:
        await shop.delete(f"/admin/webhooks/{webhook_id}", headers=ADMIN)


@pytest.fixture(autouse=True)
async def clean_slate(settings: Settings) -> None:
    """Each test starts with no webhook and no events waiting for the deliverers: the session's
    earlier tests (a whole `make test`) leave webhooks (the admin fuzz's, to made-up URLs) and
    thousands of events in the stream, which a new deliverer would first work through (the
    group reads from the stream's start, so that no event emitted while no worker ran is
    lost), and a test's own events would wait behind them."""
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM webhooks"))  # their attempts go with them
    finally:
        await engine.dispose()
    async with Redis.from_url(settings.redis_url) as redis:
        # Anew at the stream's end: no backlog, and no entry an earlier worker read and never
        # acknowledged (a deliverer would claim those after 30 s).
        with contextlib.suppress(ResponseError):  # no stream yet
            await redis.xgroup_destroy(EVENTS_STREAM_KEY, EVENTS_GROUP)
        await redis.xgroup_create(EVENTS_STREAM_KEY, EVENTS_GROUP, id="$", mkstream=True)


@pytest.fixture
async def events_redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def delivering(redis: Redis, engine: AsyncEngine, **options: Any) -> AsyncIterator[Deliverer]:
    """A deliverer running in this loop, with a test's short timeout and backoff."""
    options = {
        "timeout_s": DELIVERY_TIMEOUT_S,
        "backoff_base_s": BACKOFF_BASE_S,
        "backoff_cap_s": 2.0,
        "max_attempts": 4,
        **options,
    }
    async with http_client() as http:
        deliverer = Deliverer(redis, engine, http, **options)
        task = asyncio.create_task(deliverer.run())
        try:
            yield deliverer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def deliverer(events_redis: Redis, engine: AsyncEngine) -> AsyncIterator[Deliverer]:
    async with delivering(events_redis, engine) as d:
        yield d


async def attempts(shop: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    reply = await shop.get(f"/admin/webhooks/{webhook_id}/deliveries", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def no_dead_letters(engine: AsyncEngine) -> None:
    """The dead-letter queue empty (earlier tests leave letters): its edge can be seen."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE dead_letters SET replayed_at = now() WHERE replayed_at IS NULL")
        )
