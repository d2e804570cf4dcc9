"""The shop: catalog and admin API (orders arrive in a later issue)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra import errors
from infra.http import JSONResponse, LimitsMiddleware, exception_handlers
from infra.metrics import Metrics, RequestMetricsMiddleware
from infra.redis import create_redis
from infra.scripts import SaleScripts
from infra.settings import Settings
from shop import admin, products
from shop.context import ShopContext, shop_context


async def healthz(request: Request) -> Response:
    ctx = shop_context(request)
    try:
        await ctx.redis.ping()
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        raise errors.Unavailable("a backing store is not answering") from None
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings) -> Starlette:
    metrics = Metrics("flashsale_shop")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = create_redis(settings.redis_url)
        engine = create_async_engine(settings.database_url, pool_size=10, pool_pre_ping=True)
        app.state.ctx = ShopContext(settings, redis, SaleScripts(redis), engine, metrics)
        try:
            yield
        finally:
            await engine.dispose()
            await redis.aclose()

    routes = [
        Route("/products", products.list_products, methods=["GET"]),
        Route("/products/{product_id}", products.get_product, methods=["GET"]),
        Route("/admin/products", admin.create_product, methods=["POST"]),
        Route("/admin/products/{product_id}", admin.update_product, methods=["PATCH"]),
        Route("/admin/sales/{product_id}/pause", admin.pause, methods=["POST"]),
        Route("/admin/sales/{product_id}/resume", admin.resume, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestMetricsMiddleware, metrics=metrics),
            Middleware(LimitsMiddleware),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
