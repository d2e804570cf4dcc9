"""Faults of the platform's own processes, each during a storm: the order worker, the shop,
one of two schedulers and the queue server die; nothing is lost, doubled or reordered."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import BREAKER_COOLDOWN_S
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
from tests.support import iso_in

pytestmark = pytest.mark.slow


def report(fault: str, **figures: float | int | str) -> None:
    """One line per fault (pytest -s shows them): the figures the README quotes."""
    shown = ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
    )
    print(f"\nFAULT {fault}: {shown}")


async def _stored(engine: AsyncEngine, order_ids: list[str]) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM orders WHERE order_id = ANY(:ids)"), {"ids": order_ids}
        )
        return int(result.scalar_one())


async def _inserts_waiting(engine: AsyncEngine) -> int:
    # A connection of its own: pg_stat_activity is a snapshot for the rest of a transaction.
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'INSERT INTO orders%'"
            )
        )
        return int(result.scalar_one())


async def test_the_order_worker_killed_mid_batch(
    platform: FaultPlatform, engine: AsyncEngine, valkey: Redis, http: httpx.AsyncClient
) -> None:
    pid = await create_sale(http, platform.shop, stock=24, batch_size=4)
    probes = await probe_sales(http, platform.shop)
    keys = SaleKeys(pid)
    storm = Storm(platform, pid, 36)
    storm.start()
    restarts = platform.restarts()
    await storm.until("orders flowing", lambda: len(storm.accepted) >= 2)
    worker = platform["worker"]
    async with engine.connect() as blocker:
        # Mid-batch, for certain: a SHARE lock on orders lets reads by but holds the
        # worker's INSERT, so the worker is inside a batch (fetched, its transaction open,
        # its offsets not committed) when it dies.
        await blocker.execute(text("LOCK TABLE orders IN SHARE MODE"))
        deadline = time.monotonic() + 30
        while not await _inserts_waiting(engine):
            assert time.monotonic() < deadline, "the worker never began a batch"
            await asyncio.sleep(0.01)
        in_flight = await valkey.zcard(keys.pending)
        assert in_flight > 0
        killed = worker.kill9()
        await blocker.rollback()  # its backend now finds its client gone: no commit
    t0 = time.monotonic()
    at_kill = list(storm.accepted)
    up = await worker.wait_up(not_pid=killed)
    deadline = time.monotonic() + 30
    while await _stored(engine, at_kill) < len(at_kill):
        assert time.monotonic() < deadline, "orders accepted before the kill never stored"
        await asyncio.sleep(0.05)
    caught_up = time.monotonic()
    # The reconciler stored the backlog; the new worker's consumer must take over too (the
    # dead one never left the group: the broker waits out its session before handing over).
    consuming = await consumer_stores_again(platform, engine, probes)
    await storm.finish()
    final = await check_invariants(storm, engine)
    platform.assert_nobody_else_died(restarts, "worker")
    assert worker.child.restarts >= 1
    report(
        "worker kill -9",
        pending_at_kill=in_flight,
        accepted_at_kill=len(at_kill),
        restarted_s=up - t0,
        backlog_stored_s=caught_up - t0,
        consumer_back_s=consuming - t0,
    )
    print(summary(storm, final))


async def _breaker(gate: str, http: httpx.AsyncClient) -> str:
    body = (await http.get(f"{gate}/metrics")).text
    for state, value in re.findall(r'upstream_breaker_state\{state="(\w+)"\} ([0-9.]+)', body):
        if float(value) == 1.0:
            return state
    raise AssertionError("the gate exports no breaker state")


async def test_the_shop_down_the_gate_answers_503_and_the_circuit_closes_again(
    platform: FaultPlatform, engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    pid = await create_sale(http, platform.shop, stock=20)
    storm = Storm(platform, pid, 30)
    storm.start()
    restarts = platform.restarts()
    await storm.until("a first order", lambda: len(storm.accepted) >= 2)
    shop = platform["shop"]
    shop.kill9()
    await shop.stop()  # and it stays down: nobody restarts it yet
    t0 = time.monotonic()
    # The gate answers for the shop: 503 upstream_unavailable with Retry-After, and after
    # enough failures the breaker opens and answers at once.
    product = f"{platform.gate}/products/{pid}"
    seen: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + 20
    while await _breaker(platform.gate, http) != "open":
        assert time.monotonic() < deadline, f"the breaker never opened: {seen[-3:]}"
        reply = await http.get(product)
        seen.append((reply.status_code, reply.headers.get("retry-after")))
        assert reply.status_code == 503 and reply.json()["error"] == "upstream_unavailable"
        assert int(reply.headers["retry-after"]) >= 1
        await asyncio.sleep(0.05)
    opened = time.monotonic()
    quick = time.monotonic()
    refused = await http.get(product)
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert time.monotonic() - quick < 1.0, "an open breaker answers at once"
    await asyncio.sleep(1.0)  # the storm keeps knocking meanwhile
    await shop.start()
    back = time.monotonic()
    deadline = back + BREAKER_COOLDOWN_S + 10
    while await _breaker(platform.gate, http) != "closed":
        assert time.monotonic() < deadline, "the breaker never closed again"
        await http.get(product)  # a probe is a request: the half-open breaker lets one by
        await asyncio.sleep(0.1)
    closed = time.monotonic()
    await storm.finish()
    final = await check_invariants(storm, engine)
    platform.assert_nobody_else_died(restarts, "shop")
    gate_503s = sum(t.errors.count("503") for t in storm.tabs)
    assert gate_503s > 0 and all(int(v) >= 1 for t in storm.tabs for v in t.retry_after)
    report(
        "shop down",
        breaker_opened_after_s=opened - t0,
        shop_back_after_s=back - t0,
        circuit_closed_after_shop_back_s=closed - back,
        storm_503s=gate_503s,
    )
    print(summary(storm, final))


async def _ticks(valkey: Redis, keys: SaleKeys) -> list[tuple[int, int, float]]:
    """(tick number, admitted, at ms) of every tick that could admit, from the admission log."""
    entries = await valkey.zrange(keys.rate_log, 0, -1, withscores=True)
    ticks = []
    for member, at in entries:
        n, count = member.split(":")
        ticks.append((int(n), int(count), at))
    return sorted(ticks, key=lambda t: t[2])


async def test_one_of_two_schedulers_killed_the_other_continues(
    platform: FaultPlatform, engine: AsyncEngine, valkey: Redis, http: httpx.AsyncClient
) -> None:
    interval_s = 0.5
    # Everyone joins before the start, so every admission is a tick's (a visitor who finds
    # the line empty and room free passes straight through, without a tick).
    pid = await create_sale(
        http, platform.shop, stock=20, batch_size=2, interval_s=interval_s, sale_start=iso_in(1.5)
    )
    keys = SaleKeys(pid)
    storm = Storm(platform, pid, 30)
    storm.start()
    restarts = platform.restarts()
    await storm.until("first admissions", lambda: any(t.token for t in storm.tabs))
    victim, survivor = platform["scheduler-a"], platform["scheduler-b"]
    victim.kill9()
    await victim.stop()  # down for a while: the survivor alone admits
    t0 = time.monotonic()
    before = len(await _ticks(valkey, keys))
    await asyncio.sleep(3.0)
    alone = await _ticks(valkey, keys)
    during = len(alone) - before
    # 3 s at a tick per 0.5 s: about 6 ticks, all the survivor's.
    assert during >= 4, f"only {during} ticks while one scheduler ran alone"
    assert survivor.up
    await victim.start()
    back = time.monotonic()
    await storm.finish()
    final = await check_invariants(storm, engine)
    platform.assert_nobody_else_died(restarts, "scheduler-a")
    ticks = await _ticks(valkey, keys)
    numbers = [n for n, _, _ in ticks]
    assert len(numbers) == len(set(numbers)), f"a tick ran twice: {numbers}"
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(ticks)]
    assert min(gaps) >= interval_s * 1000 / 2, f"two ticks closer than half an interval: {gaps}"
    # Every admission came from a logged tick (the log's window, 30 s, covers the whole sale),
    # and no tick admitted more than a batch.
    assert sum(count for _, count, _ in ticks) == final["tokens_issued"]
    assert max(count for _, count, _ in ticks) <= 2
    report(
        "scheduler kill -9",
        ticks_while_alone=during,
        alone_s=back - t0,
        ticks_total=len(ticks),
        admitted=final["tokens_issued"],
    )
    print(summary(storm, final))


async def test_a_queue_server_restart_keeps_every_place(
    platform: FaultPlatform, engine: AsyncEngine, valkey: Redis, http: httpx.AsyncClient
) -> None:
    # A slow line, joined before the start: most tabs are still waiting when the queue
    # server dies, and the sale is not sold out before it is back (a re-join is 409 then).
    pid = await create_sale(
        http, platform.shop, stock=24, batch_size=2, interval_s=0.5, sale_start=iso_in(1.0)
    )
    keys = SaleKeys(pid)
    storm = Storm(platform, pid, 36)
    storm.start()
    restarts = platform.restarts()
    await storm.until(
        "a long line, moving",
        lambda: any(t.token for t in storm.tabs) and len(storm.waiting) >= 20,
    )
    places = {t.n: t.positions[-1] for t in storm.waiting}
    line_before = await valkey.zcard(keys.line)
    queue = platform["queue_server"]
    killed = queue.kill9()
    t0 = time.monotonic()
    up = await queue.wait_up(not_pid=killed)
    # With its ticket, a waiting tab is where it was or further ahead, and a re-join with
    # that ticket is the same place (200), not a second one (201).
    tab = next(t for t in storm.waiting if t.n in places)
    rejoin = await http.post(
        f"{platform.queue}/queue/{pid}/join", headers={"Authorization": f"Bearer {tab.ticket}"}
    )
    assert rejoin.status_code == 200, rejoin.text
    again = rejoin.json()
    assert again["state"] == "admitted" or again["position"] <= places[tab.n], again
    await storm.finish()
    final = await check_invariants(storm, engine)
    platform.assert_nobody_else_died(restarts, "queue_server")
    # Every tab that was waiting then kept its ticket: none was refused (check_invariants:
    # no lost place, no move back), and each was admitted or told sold_out in its turn.
    for n in places:
        assert storm.tabs[n].outcome in ("bought", "cancelled", "sold_out"), storm.tabs[n]
    report(
        "queue_server kill -9",
        waiting_at_kill=len(places),
        line_at_kill=line_before,
        back_up_s=up - t0,
        polls_retried=sum(len(t.errors) for t in storm.tabs),
    )
    print(summary(storm, final))
