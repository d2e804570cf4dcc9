from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra.constants import HEADER_GATE_SECRET, HEADER_PRODUCT_ID, HEADER_VISITOR_ID
from infra.sale.keys import SaleKeys
from infra.settings import Settings
from infra.stack.embedded import free_port
from tests.support import running_shop


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    # A short grace: the broker-restart test waits for the reconciler.
    return stack_settings.replace(reconcile_grace_s=1.0)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def shop(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_shop(settings) as client:
        yield client


class Worker:
    """The order worker as production runs it: `python -m shop.worker`, in its own process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        # A port of its own for /healthz and /metrics: two workers may run at once.
        env = {**os.environ, **self.settings.replace(worker_port=free_port()).to_env()}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shop.worker", env=env
        )

    async def _end(self, sig: signal.Signals) -> int:
        if self.process is None:
            return 0
        process, self.process = self.process, None
        if process.returncode is None:
            process.send_signal(sig)
        return await asyncio.wait_for(process.wait(), 30)

    async def stop(self) -> None:
        code = await self._end(signal.SIGTERM)
        assert code == 0, f"the worker exited with {code} on SIGTERM"

    async def kill(self) -> None:
        """SIGKILL: no clean shutdown, no offset commit; whatever was in flight is redelivered."""
        await self._end(signal.SIGKILL)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    w = Worker(settings)
    await w.start()
    yield w
    await w.stop()


def identity(settings: Settings, product_id: str, visitor: str) -> dict[str, str]:
    """The headers the gate sets once it has verified an access token."""
    return {
        HEADER_VISITOR_ID: visitor,
        HEADER_PRODUCT_ID: product_id,
        HEADER_GATE_SECRET: settings.gate_secrets()[0],
    }


async def place_order(
    shop: httpx.AsyncClient, settings: Settings, pid: str, visitor: str, **headers: str
) -> httpx.Response:
    """One unit for `visitor`, as the gate would forward it."""
    return await shop.post(
        f"/products/{pid}/orders",
        json={"quantity": 1},
        headers={**identity(settings, pid, visitor), **headers},
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        await asyncio.sleep(0.1)


async def stored_count(engine: AsyncEngine, product_id: str) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM orders WHERE product_id = :p"), {"p": product_id}
        )
        return int(result.scalar_one())


async def stock_left(redis: Redis, keys: SaleKeys) -> int:
    return int(await redis.get(keys.stock))
