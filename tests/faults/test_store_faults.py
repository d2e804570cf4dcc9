"""Faults of the three stores, each during a storm: Valkey and the broker are killed with
``kill -9`` and restarted (Valkey from its AOF, the broker empty), PostgreSQL is stopped for
10 s. Nothing accepted is lost, nothing is sold twice, everything is healthy again."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.sale.keys import SaleKeys
from tests.faults.platform import FaultPlatform
from tests.faults.storm import (
    Storm,
    check_invariants,
    consumer_stores_again,
    create_sale,
    probe_sales,
    summary,
)
from tests.faults.test_process_faults import report

pytestmark = pytest.mark.slow

POSTGRES_DOWN_S = 10.0


async def _stored(engine: AsyncEngine, order_ids: list[str]) -> int:
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT count(*) FROM orders WHERE order_id = ANY(:ids)"),
                {"ids": order_ids},
            )
            return int(result.scalar_one())
    except (OSError, DBAPIError):
        return -1  # our own connection, through a restart


async def _all_stored(engine: AsyncEngine, order_ids: list[str], timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while await _stored(engine, order_ids) < len(order_ids):
        assert time.monotonic() < deadline, "orders accepted before the fault never stored"
        await asyncio.sleep(0.05)
    return time.monotonic()


async def test_valkey_killed_restarts_from_its_aof_and_sells_no_unit_twice(
    platform: FaultPlatform, engine: AsyncEngine, valkey: Redis, http: httpx.AsyncClient
) -> None:
    pid = await create_sale(http, platform.shop, stock=20)
    keys = SaleKeys(pid)
    storm = Storm(platform, pid, 30)
    storm.start()
    restarts = platform.restarts()
    await storm.until("orders flowing", lambda: len(storm.accepted) >= 4)
    proc = platform["valkey"]
    killed = proc.kill9()
    t0 = time.monotonic()
    acknowledged = list(storm.accepted)  # every 202 so far: its reservation was acknowledged
    up = await proc.wait_up(not_pid=killed)
    # The AOF replayed: every reservation whose 202 had been answered is there again, with
    # the stock it took. (A kill of the process loses nothing that was acknowledged: Valkey
    # writes the AOF buffer to the file before it replies; see the README for the window.)
    deadline = time.monotonic() + 10
    while True:
        try:
            present = await valkey.hmget(keys.orders, acknowledged)
            break
        except RedisError:  # our own pooled connection died with the server
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    lost = [o for o, raw in zip(acknowledged, present, strict=True) if raw is None]
    assert not lost, f"acknowledged reservations lost by the restart: {lost}"
    await storm.finish()
    final = await check_invariants(storm, engine)
    platform.assert_nobody_else_died(restarts, "valkey")
    assert len(storm.accepted) > len(acknowledged), "the storm ended with the fault"
    healthy = time.monotonic()
    report(
        "valkey kill -9",
        acknowledged_at_kill=len(acknowledged),
        lost=len(lost),
        aof_reloaded_s=up - t0,
        calls_retried=sum(len(t.errors) for t in storm.tabs),
        storm_done_s=healthy - t0,
    )
    print(summary(storm, final))


async def test_the_broker_killed_loses_its_messages_and_the_reconciler_recovers_them(
    platform: FaultPlatform, engine: AsyncEngine, valkey: Redis, http: httpx.AsyncClient
) -> None:
    pid = await create_sale(http, platform.shop, stock=20)
    probes = await probe_sales(http, platform.shop)
    storm = Storm(platform, pid, 30)
    storm.start()
    restarts = platform.restarts()
    # Orders that only the broker (and their reservation records) hold: the worker lags (it
    # is stopped for a moment) when the broker dies, so the kill loses them for certain.
    await storm.until("orders flowing", lambda: len(storm.accepted) >= 2)
    worker = platform["worker"]
    worker.pause()
    try:
        accepted_before = len(storm.accepted)
        await storm.until(
            "orders waiting in the broker", lambda: len(storm.accepted) >= accepted_before + 6
        )
        # Less those a pay or cancel stored already (the shop stores a pending order first).
        in_broker = len(storm.accepted) - await _stored(engine, storm.accepted)
        assert in_broker >= 1, "no order waited in the broker"
        proc = platform["tansu"]
        killed = proc.kill9()  # memory storage: every message, offset and group is gone
    finally:
        worker.resume()
    t0 = time.monotonic()
    acknowledged = list(storm.accepted)
    up = await proc.wait_up(not_pid=killed)
    recovered = await _all_stored(engine, acknowledged, timeout_s=45)
    # The reconciler has stored what the broker lost; the consumer must be consuming again
    # too (it hung for good on an offset commit the new broker refused).
    consuming = await consumer_stores_again(platform, engine, probes)
    await storm.finish()
    final = await check_invariants(storm, engine)
    platform.assert_nobody_else_died(restarts, "tansu")
    assert len(storm.accepted) > len(acknowledged), "the storm ended with the fault"
    report(
        "tansu kill -9",
        accepted_at_kill=len(acknowledged),
        unstored_at_kill=in_broker,
        broker_back_s=up - t0,
        all_recovered_s=recovered - t0,
        consumer_back_s=consuming - t0,
        calls_retried=sum(len(t.errors) for t in storm.tabs),
    )
    print(summary(storm, final))


async def test_postgres_stopped_for_10_s_loses_nothing(
    platform: FaultPlatform, engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    pid = await create_sale(http, platform.shop, stock=20)
    storm = Storm(platform, pid, 30)
    storm.start()
    restarts = platform.restarts()
    await storm.until("orders flowing", lambda: len(storm.accepted) >= 4)
    postgres = platform["postgres"]
    await postgres.stop()  # a fast shutdown: every connection is cut
    during = len(storm.accepted)
    await asyncio.sleep(POSTGRES_DOWN_S)
    # Orders were still accepted meanwhile: they wait in Valkey and the broker.
    accepted_while_down = len(storm.accepted) - during
    started = time.monotonic()
    await postgres.start()
    back = time.monotonic()
    recovered = await _all_stored(engine, list(storm.accepted), timeout_s=30)
    await storm.finish()
    final = await check_invariants(storm, engine)
    platform.assert_nobody_else_died(restarts, "postgres")
    assert accepted_while_down > 0, "no order came while PostgreSQL was down"
    report(
        "postgres down 10 s",
        accepted_while_down=accepted_while_down,
        restart_s=back - started,
        backlog_stored_after_back_s=recovered - back,
        calls_retried=sum(len(t.errors) for t in storm.tabs),
    )
    print(summary(storm, final))
