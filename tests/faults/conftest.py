"""The faults suite's own platform: every server and process, started once for the package.

Its Valkey, PostgreSQL and tansu are not the session's: a test here kills them. Each test
makes its own sale (a unique product id), so what one fault leaves behind is not the next
test's business, except that every process must be healthy again, which each test checks.
With FAULTS_KEEP=1 the data directory (and every process's log under logs/) is kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.faults.platform import FaultPlatform


@pytest.fixture(scope="package")
async def platform() -> AsyncIterator[FaultPlatform]:
    # Under /tmp, not pytest's basetemp: as root, PostgreSQL runs as another user, who must
    # traverse every parent of its data directory (see tests/conftest.py).
    data_dir = Path(tempfile.mkdtemp(prefix="flashsale-test-faults-"))
    faults = FaultPlatform(data_dir)
    try:
        try:
            await faults.start()
        except BaseException:
            for name in faults.procs:
                print(f"--- {name}.log ---\n{faults.log_tail(name)}")
            raise
        yield faults
    finally:
        await faults.stop()
        if not os.environ.get("FAULTS_KEEP"):
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def engine(platform: FaultPlatform) -> AsyncIterator[AsyncEngine]:
    # pool_pre_ping: the test's own connections outlive a PostgreSQL restart.
    engine = create_async_engine(platform.postgres.url, pool_pre_ping=True)
    await platform.all_healthy()  # a test starts on a whole platform
    yield engine
    await engine.dispose()


@pytest.fixture
async def valkey(platform: FaultPlatform) -> AsyncIterator[Redis]:
    """A client of the faults suite's own Valkey (which the tests kill)."""
    client = Redis.from_url(platform.valkey.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client
