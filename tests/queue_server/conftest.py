from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from queue_server.app import create_app
from scheduler.admission import Admissions
from tests.support import running, serving
from token_gate.codec import TokenCodec


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings.from_env({}, dev=True, redis_url=redis_url, join_rate_per_ip=0)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as c:
        yield c


@pytest.fixture
def codec(settings: Settings) -> TokenCodec:
    return TokenCodec(settings.secret_keys)


@pytest.fixture
def scripts(redis: Redis) -> SaleScripts:
    return SaleScripts(redis)


@pytest.fixture
def admissions(redis: Redis, scripts: SaleScripts, codec: TokenCodec) -> Admissions:
    return Admissions(redis, scripts, codec, Metrics("test"))


@pytest.fixture
def tick(admissions: Admissions):
    """Runs the next admission tick of a sale at once (no clock, no skew guard)."""
    counters: dict[str, int] = {}

    async def run(product_id: str) -> tuple[str, ...]:
        n = counters[product_id] = counters.get(product_id, 0) + 1
        return (await admissions.tick(product_id, n, interval_ms=0)).admitted

    return run


# The browser tests of the waiting room (test_waiting_room_*.py): one queue server under
# uvicorn and one Chromium per module, so that a module pays their start-up once.


@pytest.fixture(scope="module")
def page_settings(redis_url: str) -> Settings:
    return Settings.from_env({}, dev=True, redis_url=redis_url, join_rate_per_ip=0)


@pytest.fixture(scope="module")
async def queue_url(page_settings: Settings) -> AsyncIterator[str]:
    async with serving(create_app(page_settings)) as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from tests.browser import chromium

    async with chromium() as launched:
        yield launched
