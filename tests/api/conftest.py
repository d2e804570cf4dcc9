from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra.settings import Settings
from tests.api.fuzz import SEED

STATE_LUA = (Path(__file__).parent / "state.lua").read_text()
# Every row of the system of record, in one digest.
PG_STATE = text(
    "SELECT md5(coalesce(string_agg(r, '|' ORDER BY r), '')) FROM ("
    " SELECT o::text AS r FROM orders o"
    " UNION ALL SELECT ob::text FROM outbox ob"
    " UNION ALL SELECT d::text FROM dead_letters d) AS t"
)
LONG_FACTOR = 10


@dataclass(frozen=True)
class Budget:
    """How long each API is fuzzed: CI's fixed seed and size, or --long's."""

    seed: int
    factor: int
    deadline_s: float

    def examples(self, per_operation: int) -> int:
        return per_operation * self.factor


@pytest.fixture(scope="session")
def budget(pytestconfig: pytest.Config) -> Budget:
    if pytestconfig.getoption("--long"):
        seed = random.randrange(2**32)
        print(f"\ntests/api: --long, seed {seed}")
        return Budget(seed, LONG_FACTOR, 150.0 * LONG_FACTOR)
    # About 15 s per API on an idle 2-core machine; the deadline only stops a run that a
    # loaded machine drags out (the operations it leaves are reported as failures).
    return Budget(SEED, 1, 150.0)


async def store_state(redis: Redis, engine: AsyncEngine | None = None) -> tuple[str, str]:
    """The sale store's keys and, with `engine`, PostgreSQL's rows, as two digests."""
    keys = await redis.eval(STATE_LUA, 0, "fs:*")
    rows = ""
    if engine is not None:
        async with engine.connect() as conn:
            rows = (await conn.execute(PG_STATE)).scalar_one()
    return str(keys), rows


@pytest.fixture
async def engine(stack_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(stack_settings.database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
