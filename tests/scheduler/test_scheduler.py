"""The scheduler with real APScheduler jobs and real time: ticks, replicas, sync, restart."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from redis.asyncio import Redis

from infra.constants import DEV_SECRET_KEY
from infra.sale.scripts import SaleScripts
from infra.web.metrics import Metrics
from scheduler.admission import Admissions
from scheduler.jobs import SaleJobs
from shop.sales import apply, update_sale
from tests.support import iso_in, new_sale
from token_gate.codec import TokenCodec

codec = TokenCodec((DEV_SECRET_KEY,))


def replica(redis: Redis) -> SaleJobs:
    return SaleJobs(redis, Admissions(redis, SaleScripts(redis), codec, Metrics("t")))


async def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def fill(redis: Redis, line_key: str, n: int, prefix: str = "v") -> list[str]:
    visitors = [f"{prefix}{i}" for i in range(n)]
    await redis.zadd(line_key, {v: i + 1 for i, v in enumerate(visitors)})
    return visitors


async def test_two_replicas_never_double_admit(redis: Redis) -> None:
    """Two schedulers run the same sale at once; SET NX claims each tick exactly once."""
    keys = await new_sale(redis, batch_size=3, interval_s=0.2, stock=10**6)
    visitors = await fill(redis, keys.line, 60)
    admitted_by: list[tuple[str, ...]] = []
    a, b = replica(redis), replica(redis)
    for jobs in (a, b):
        original = jobs.admissions.tick

        async def recording(product_id: str, n: int, interval_ms: int, _orig=original):
            result = await _orig(product_id, n, interval_ms)
            if result.admitted:
                admitted_by.append(result.admitted)
            return result

        jobs.admissions.tick = recording  # type: ignore[method-assign]
    async with a, b:
        await wait_for(lambda: _zcard_is(redis, keys.admitted, 30), timeout_s=20)
    everyone = [v for batch in admitted_by for v in batch]
    assert len(everyone) == len(set(everyone))  # nobody admitted twice
    assert all(len(batch) <= 3 for batch in admitted_by)
    assert everyone == visitors[: len(everyone)]  # and still in FIFO order
    # every admitted visitor got a token for this product
    tokens = await redis.hgetall(keys.tokens)
    assert set(tokens) == set(everyone)
    assert all(codec.read_access(t).visitor_id == v for v, t in tokens.items())


async def _zcard_is(redis: Redis, key: str, at_least: int) -> bool:
    return await redis.zcard(key) >= at_least


async def test_a_tick_is_claimed_once(redis: Redis) -> None:
    keys = await new_sale(redis, batch_size=5)
    await fill(redis, keys.line, 20)
    a = replica(redis).admissions
    b = replica(redis).admissions
    results = await asyncio.gather(*(x.tick(keys.product_id, 7, 0) for x in (a, b, a, b)))
    outcomes = Counter(r.outcome for r in results)
    assert outcomes == {"admitted": 1, "claimed": 3}
    assert await redis.zcard(keys.admitted) == 5


async def test_new_and_changed_sales_are_picked_up_without_a_restart(redis: Redis) -> None:
    jobs = replica(redis)
    async with jobs:
        keys = await new_sale(redis, batch_size=1, interval_s=3600, stock=100)
        await fill(redis, keys.line, 10)
        await wait_for(lambda: _has_job(jobs, keys.product_id))
        # a one-hour interval admits nobody soon; shorten it while the sale runs
        scripts = SaleScripts(redis)
        await update_sale(redis, scripts, keys, {"interval_s": 0.1, "batch_size": 2})
        await wait_for(lambda: _zcard_is(redis, keys.admitted, 4))


async def _has_job(jobs: SaleJobs, product_id: str) -> bool:
    return jobs.scheduler.get_job(f"tick:{product_id}") is not None


async def test_jobs_survive_a_scheduler_restart(redis: Redis) -> None:
    keys = await new_sale(redis, opened=False, batch_size=1, interval_s=0.1, stock=100)
    await fill(redis, keys.line, 40)
    async with replica(redis):
        await wait_for(lambda: _zcard_is(redis, keys.admitted, 2))
    stopped_at = await redis.zcard(keys.admitted)
    async with replica(redis):  # a new process: nothing but what Redis holds
        await wait_for(lambda: _zcard_is(redis, keys.admitted, stopped_at + 3))
    assert await redis.hget(keys.sale, "opened") == "1"


async def test_the_scheduler_opens_a_sale_at_its_start_with_the_draw(redis: Redis) -> None:
    keys = await new_sale(
        redis, queue_mode="shuffle_prequeue", sale_start=iso_in(1.0), batch_size=50, stock=100
    )
    early = await fill(redis, keys.line, 30, prefix="early")
    await redis.set(keys.seq, 30)
    async with replica(redis):
        await wait_for(lambda: _zcard_is(redis, keys.admitted, 30), timeout_s=15)
    assert await redis.hget(keys.sale, "opened") == "1"
    assert await redis.hget(keys.sale, "cut") == "30"
    assert sorted(await redis.zrange(keys.admitted, 0, -1)) == sorted(early)


async def test_pause_and_resume(redis: Redis) -> None:
    keys = await new_sale(redis, batch_size=1, interval_s=0.1, stock=100)
    await fill(redis, keys.line, 50)
    scripts = SaleScripts(redis)
    await apply(scripts, keys, {"paused": "1"})
    async with replica(redis):
        await asyncio.sleep(0.5)  # several ticks' worth: none may admit
        assert await redis.zcard(keys.admitted) == 0
        await apply(scripts, keys, {"paused": "0"})
        await wait_for(lambda: _zcard_is(redis, keys.admitted, 2))


async def test_sold_out_stops_admission_within_one_tick(redis: Redis) -> None:
    keys = await new_sale(redis, batch_size=1, interval_s=0.1, stock=100)
    await fill(redis, keys.line, 50)
    async with replica(redis):
        await wait_for(lambda: _zcard_is(redis, keys.admitted, 1))
        await redis.set(keys.stock, 0)
        await asyncio.sleep(0.15)  # at most one tick can have been in flight
        frozen = await redis.zcard(keys.admitted)
        await asyncio.sleep(0.5)
        assert await redis.zcard(keys.admitted) == frozen
    info = await SaleScripts(redis).info(keys)
    assert info["state"] == "sold_out"


async def test_ended_sales_are_unscheduled(redis: Redis) -> None:
    jobs = replica(redis)
    async with jobs:
        keys = await new_sale(redis, interval_s=0.1)
        await wait_for(lambda: _has_job(jobs, keys.product_id))
        await apply(SaleScripts(redis), keys, {"cancelled": "1"})

        async def gone() -> bool:
            return not await _has_job(jobs, keys.product_id)

        await wait_for(gone)


async def test_stopping_twice_is_quiet(redis: Redis) -> None:
    # AsyncIOScheduler shuts down in a loop callback: a second stop queued before it ran
    # raised SchedulerNotRunningError in that callback, logged on every Ctrl-C of `flashsale up`.
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        jobs = replica(redis)
        await jobs.start()
        await jobs.stop()
        await jobs.stop()
        await asyncio.sleep(0.05)
        assert not jobs.scheduler.running
    finally:
        loop.set_exception_handler(previous)
    assert errors == []
