from __future__ import annotations

import random
import re
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
# Every row of the system of record, each named table/product/id (so that a change names
# what moved, and the rows of other tests' sales can be left out) with a digest of the row.
PG_STATE = text(
    "SELECT 'orders/' || product_id || '/' || order_id, md5(o::text) FROM orders o"
    " UNION ALL SELECT 'outbox/' || coalesce(payload->>'product_id', '') || '/' || id,"
    " md5(ob::text) FROM outbox ob"
    " UNION ALL SELECT 'dead_letters/' || coalesce(key, '') || '/' || id, md5(d::text)"
    " FROM dead_letters d"
    # The webhooks are no sale's: an empty product segment, always in.
    " UNION ALL SELECT 'webhooks//' || id, md5(w::text) FROM webhooks w"
    " UNION ALL SELECT 'webhook_events/' || coalesce(product_id, '') || '/' || id, md5(e::text)"
    " FROM webhook_events e"
    " UNION ALL SELECT 'webhook_deliveries//' || id, md5(wd::text) FROM webhook_deliveries wd"
)
_TAG = re.compile(r"\{([^}]*)\}")
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


State = dict[str, str]


async def store_state(
    redis: Redis, engine: AsyncEngine | None = None, foreign: frozenset[str] = frozenset()
) -> State:
    """The sale store's keys and, with `engine`, PostgreSQL's rows: each by name, with a digest.

    `foreign` names sales that were there before the test (earlier tests'): their keys and
    rows are left out, so that their background work (a hold expiring, a reconciler pass of
    an earlier stack) cannot read as a write of a refused request. A key or a row of any other
    sale, including one a request made up, is in."""
    flat = await redis.eval(STATE_LUA, 0, "fs:*")
    state = {
        (k.decode() if isinstance(k, bytes) else k): str(v)
        for k, v in zip(flat[::2], flat[1::2], strict=True)
    }
    if engine is not None:
        async with engine.connect() as conn:
            state.update({name: digest for name, digest in await conn.execute(PG_STATE)})
    return {name: digest for name, digest in state.items() if _sale_of(name) not in foreign}


def _sale_of(name: str) -> str | None:
    """The sale a key (its hash tag) or a row (its product segment) belongs to."""
    if name.startswith("fs:"):
        tag = _TAG.search(name)
        return tag.group(1) if tag else None
    return name.split("/", 2)[1]


async def sales_present(redis: Redis) -> frozenset[str]:
    """Every sale the store holds keys of now."""
    flat = await redis.eval(STATE_LUA, 0, "fs:*")
    names = (k.decode() if isinstance(k, bytes) else k for k in flat[::2])
    return frozenset(s for s in map(_sale_of, names) if s is not None)


@pytest.fixture
async def engine(stack_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(stack_settings.database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
