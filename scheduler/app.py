"""The scheduler process: APScheduler jobs per sale, plus /healthz and /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.redis import create_redis
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web import errors
from infra.web.app import JSONResponse, build_app
from infra.web.metrics import Labels, Metrics
from scheduler.admission import Admissions
from scheduler.jobs import SaleJobs
from scheduler.openapi import SCHEDULER_API
from scheduler.sale_metrics import SaleMetrics
from token_gate.codec import TokenCodec


def create_app(settings: Settings) -> Starlette:
    metrics = Metrics("flashsale_scheduler")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = create_redis(settings.redis_url, max_connections=32)
        admissions = Admissions(
            redis, SaleScripts(redis), TokenCodec(settings.secret_keys), metrics
        )
        jobs = SaleJobs(redis, admissions)

        async def live_sales() -> dict[Labels, float]:
            return {(): float(len(jobs.sale_ids))}

        metrics.gauge("live_sales", "Sales with scheduled jobs", live_sales)
        SaleMetrics(redis, admissions.scripts, jobs).register(metrics)
        app.state.redis, app.state.jobs = redis, jobs
        async with jobs:  # stops the jobs however the app ends
            yield
        await redis.aclose()

    async def healthz(request: Request) -> Response:
        try:
            await request.app.state.redis.ping()
        except Exception:
            raise errors.Unavailable("redis is not answering") from None
        if not request.app.state.jobs.scheduler.running:
            raise errors.Unavailable("the scheduler is not running")
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    return build_app(routes, lifespan, metrics, openapi=SCHEDULER_API)
