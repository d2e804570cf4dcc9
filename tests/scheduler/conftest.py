from __future__ import annotations

import pytest
from redis.asyncio import Redis


@pytest.fixture(autouse=True)
async def _only_this_tests_sales(redis: Redis) -> None:
    # A scheduler schedules every sale in the store; leftovers of other tests would tick too.
    await redis.flushdb()
