"""The embedded servers answer real client calls, keep their data, and come back when killed."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra.stack.embedded import DATABASE_NAME, EmbeddedStack, free_port


def _asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def test_valkey_answers(redis: Redis) -> None:
    key = f"test:{uuid.uuid4().hex}"
    await redis.set(key, "v", ex=60)
    assert await redis.get(key) == "v"


async def test_postgres_answers(database_url: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(database_url))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == database_url.rsplit("/", 1)[1]
    finally:
        await conn.close()


async def test_kafka_answers(kafka_bootstrap: str) -> None:
    topic = f"test-{uuid.uuid4().hex[:12]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    # No group: tansu takes seconds to settle a consumer group, and this test is about the broker.
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        message = await asyncio.wait_for(consumer.getone(), 30)
        assert (message.key, message.value) == (b"k", b"hello")
    finally:
        await consumer.stop()


async def test_data_survives_a_restart_of_the_stack(embedded_data_dir: Path) -> None:
    tmp_path = embedded_data_dir
    async with EmbeddedStack(tmp_path, kafka=False) as stack:
        first_urls = (stack.redis_url, stack.database_url)
        client = Redis.from_url(stack.redis_url)
        try:
            await client.set("kept", "yes")
        finally:
            await client.aclose()
        conn = await asyncpg.connect(_asyncpg_dsn(stack.database_url))
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')")
        finally:
            await conn.close()

    async with EmbeddedStack(tmp_path, kafka=False) as stack:
        # Fresh ports, same data directory, same stored passwords.
        assert stack.database_url.endswith(f"/{DATABASE_NAME}")
        assert stack.redis_url.split("@")[0] == first_urls[0].split("@")[0]
        assert stack.database_url.split("@")[0] == first_urls[1].split("@")[0]
        client = Redis.from_url(stack.redis_url, decode_responses=True)
        try:
            assert await client.get("kept") == "yes"
        finally:
            await client.aclose()
        conn = await asyncpg.connect(_asyncpg_dsn(stack.database_url))
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "yes"
        finally:
            await conn.close()
    assert oct((tmp_path / "postgres" / "password").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "valkey" / "password").stat().st_mode & 0o777) == "0o600"


async def test_killed_valkey_comes_back_with_its_data(
    embedded_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flashsale.supervisor")
    async with EmbeddedStack(embedded_data_dir, database=False, kafka=False) as stack:
        valkey = stack.supervisor.child("valkey")
        client = Redis.from_url(stack.redis_url, decode_responses=True)
        try:
            await client.set("survivor", "1")
            old_pid = valkey.pid
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)

            async def back() -> bool:
                if valkey.pid in (None, old_pid):
                    return False
                try:
                    return bool(await client.ping())
                except RedisError:  # down or still loading its AOF: not yet
                    return False

            await _eventually(back)
            # AOF: the write reached the file before the reply, so SIGKILL does not lose it.
            assert await client.get("survivor") == "1"
        finally:
            await client.aclose()
    restarts = [r for r in caplog.records if r.getMessage() == "child exited, restarting"]
    assert [(r.child, r.exit_code) for r in restarts] == [("valkey", -signal.SIGKILL)]  # type: ignore[attr-defined]


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    """Outgoing connections take their local ports from the kernel's ephemeral range: a port
    chosen there can be taken before its server binds it (seen under the full suite)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= port < low for port in ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free when handed out
