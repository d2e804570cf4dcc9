"""Keeps one APScheduler job per live sale in step with the stored sale configs.

Nothing is kept in APScheduler's own job store: every job is rebuilt from the sale hashes in
Redis by ``sync``, which runs every second. A restarted scheduler therefore picks up exactly
where the stored configs say, and a new or changed sale is seen within a second.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.constants import SALE_SYNC_INTERVAL_S, SALES_KEY
from infra.resource import Resource
from infra.sale.keys import SaleKeys
from scheduler.admission import Admissions

log = logging.getLogger("flashsale.scheduler")

_PLAN_FIELDS = ("version", "start_ms", "end_ms", "interval_ms", "cancelled", "opened")

T = TypeVar("T")


def redis_may_be_away(job: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T | None]]:
    """A job that finds Redis away (restarting, replaying its AOF, failing over) skips its turn
    with one line: the next tick, sync or opening comes one interval later. APScheduler logged
    a traceback for each, four a second per sale while Valkey restarted. The scripts are atomic,
    so a turn cut off mid-call either happened whole or not at all."""

    @functools.wraps(job)
    async def run(*args: Any) -> T | None:
        try:
            return await job(*args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("%s skipped: redis unavailable (%s)", job.__name__, type(exc).__name__)
            return None

    return run


@dataclass(frozen=True)
class SalePlan:
    product_id: str
    version: str
    start_ms: int
    end_ms: int
    interval_ms: int
    cancelled: bool
    opened: bool

    def is_over(self, now_ms: float) -> bool:
        return self.cancelled or (self.end_ms > 0 and now_ms >= self.end_ms)


class SaleJobs(Resource):
    def __init__(self, redis: Redis, admissions: Admissions) -> None:
        self.redis = redis
        self.admissions = admissions
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._plans: dict[str, SalePlan] = {}

    async def start(self) -> None:
        self.scheduler.start()
        self.scheduler.add_job(
            redis_may_be_away(self.sync),
            IntervalTrigger(seconds=SALE_SYNC_INTERVAL_S),
            id="sync",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
        )

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            # AsyncIOScheduler shuts down in a loop callback, and stays `running` until then:
            # a second stop meanwhile queued a second shutdown, which logged
            # SchedulerNotRunningError on every Ctrl-C. One loop turn lets it finish.
            await asyncio.sleep(0)

    @property
    def sale_ids(self) -> list[str]:
        return sorted(self._plans)

    async def sync(self) -> None:
        """Add, change or drop each sale's jobs to match what Redis holds now."""
        product_ids = sorted(await self.redis.smembers(SALES_KEY))
        async with self.redis.pipeline(transaction=False) as pipe:
            for product_id in product_ids:
                pipe.hmget(SaleKeys(product_id).sale, _PLAN_FIELDS)
            rows = await pipe.execute()
        now_ms = time.time() * 1000
        seen: set[str] = set()
        for product_id, row in zip(product_ids, rows, strict=True):
            if row[0] is None:
                continue  # indexed but not (or no longer) stored
            plan = SalePlan(
                product_id,
                version=row[0],
                start_ms=int(row[1]),
                end_ms=int(row[2]),
                interval_ms=int(row[3]),
                cancelled=row[4] == "1",
                opened=row[5] == "1",
            )
            if plan.is_over(now_ms):
                continue
            seen.add(product_id)
            if self._plans.get(product_id) != plan:
                self._schedule(plan)
        for product_id in set(self._plans) - seen:
            self._unschedule(product_id)

    def _schedule(self, plan: SalePlan) -> None:
        old = self._plans.get(plan.product_id)
        self._plans[plan.product_id] = plan
        start = datetime.fromtimestamp(plan.start_ms / 1000, tz=UTC)
        if old is None or (old.start_ms, old.interval_ms) != (plan.start_ms, plan.interval_ms):
            self.scheduler.add_job(
                redis_may_be_away(self.admissions.tick_now),
                IntervalTrigger(seconds=plan.interval_ms / 1000, start_date=start),
                args=(plan.product_id, plan.start_ms, plan.interval_ms),
                id=f"tick:{plan.product_id}",
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
            log.info("sale scheduled", extra={"product_id": plan.product_id})
        now = datetime.now(UTC)
        if not plan.opened and start <= now:
            # A start that passed without a scheduler: open at once, not at the next tick.
            # A start still to come is opened by the tick due at that very moment, which then
            # admits its batch too; an opening job at the same instant would only race it for
            # the opening lock (and the tick that lost would admit nobody until the next).
            self.scheduler.add_job(
                redis_may_be_away(self.admissions.open),
                DateTrigger(run_date=now),
                args=(plan.product_id,),
                id=f"open:{plan.product_id}",
                replace_existing=True,
                misfire_grace_time=None,
            )

    def _unschedule(self, product_id: str) -> None:
        self._plans.pop(product_id, None)
        for job_id in (f"tick:{product_id}", f"open:{product_id}"):
            if self.scheduler.get_job(job_id):
                self.scheduler.remove_job(job_id)
        log.info("sale unscheduled", extra={"product_id": product_id})
