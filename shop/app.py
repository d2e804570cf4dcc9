"""The shop: catalog, orders and the admin API. Its public routes answer only the gate."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.constants import HEADER_GATE_SECRET
from infra.redis import create_redis
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web import errors
from infra.web.app import JSONResponse, build_app
from infra.web.errors import error_response
from infra.web.metrics import Metrics
from infra.web.trace import tracing_for
from shop import admin, dashboard, orders, products, webhooks
from shop.compensation import Compensation
from shop.context import ShopContext, shop_context
from shop.openapi import SHOP_API
from shop.producer import EventProducer
from shop.reservations import Reservations

if TYPE_CHECKING:
    from infra.web.tracing import Tracing


class GateOnlyMiddleware:
    """The catalog and orders answer only requests that carry the gate's secret header, so
    nobody can reach them around the gate (and its token checks)."""

    def __init__(self, app: ASGIApp, secrets: tuple[str, ...]) -> None:
        self.app = app
        self.secrets = [s.encode() for s in secrets]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/products"):
            sent = dict(scope["headers"]).get(HEADER_GATE_SECRET.encode(), b"")
            if not any(hmac.compare_digest(sent, s) for s in self.secrets):
                response = error_response(errors.Forbidden("go through the token gate"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def healthz(request: Request) -> Response:
    ctx = shop_context(request)
    try:
        await ctx.redis.ping()
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        raise errors.Unavailable("a backing store is not answering") from None
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings, tracing: Tracing | None = None) -> Starlette:
    # `tracing`: a test's own; by default the settings' (None, so no span, unless switched on).
    tracing = tracing or tracing_for(settings, "flashsale-shop")
    metrics = Metrics("flashsale_shop")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = create_redis(settings.redis_url)
        engine = create_async_engine(settings.database_url, pool_size=10, pool_pre_ping=True)
        scripts = SaleScripts(redis)
        reservations = Reservations(redis, scripts)
        producer = EventProducer(settings.kafka_bootstrap, tracing)
        app.state.ctx = ShopContext(
            settings=settings,
            redis=redis,
            scripts=scripts,
            engine=engine,
            metrics=metrics,
            reservations=reservations,
            producer=producer,
            compensation=Compensation(engine, reservations),
        )
        try:
            async with producer:
                yield
        finally:
            await engine.dispose()
            await redis.aclose()

    order_path = "/products/{product_id}/orders"
    # What a drop hammers, through the gate: the product page, then the orders.
    hot = [
        Route("/products/{product_id}", products.get_product, methods=["GET"]),
        Route(order_path, orders.place, methods=["POST"]),
    ]
    routes = [
        Route("/products", products.list_products, methods=["GET"]),
        *hot,
        Route(order_path + "/{order_id}", orders.read, methods=["GET"]),
        Route(order_path + "/{order_id}", orders.cancel, methods=["DELETE"]),
        Route(order_path + "/{order_id}/pay", orders.pay, methods=["POST"]),
        Route("/admin/products", admin.list_products, methods=["GET"]),
        Route("/admin/products", admin.create_product, methods=["POST"]),
        Route("/admin/products/{product_id}", admin.read_product, methods=["GET"]),
        Route("/admin/products/{product_id}", admin.update_product, methods=["PATCH"]),
        Route("/admin/sales/{product_id}/pause", admin.pause, methods=["POST"]),
        Route("/admin/sales/{product_id}/resume", admin.resume, methods=["POST"]),
        Route("/admin/sales/{product_id}/stats", admin.stats, methods=["GET"]),
        Route("/admin/dlq", admin.dead_letters, methods=["GET"]),
        Route("/admin/dlq/replay", admin.replay_dead_letters, methods=["POST"]),
        Route("/admin/role", admin.whoami, methods=["GET"]),
        Route("/admin/webhooks", webhooks.list_all, methods=["GET"]),
        Route("/admin/webhooks", webhooks.create, methods=["POST"]),
        Route("/admin/webhooks/{webhook_id}", webhooks.remove, methods=["DELETE"]),
        Route("/admin/webhooks/{webhook_id}/deliveries", webhooks.attempts, methods=["GET"]),
        *dashboard.routes(),  # the page and its files, all under /admin/ (see shop.dashboard)
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    app = build_app(routes, lifespan, metrics, hot_routes=hot, openapi=SHOP_API, tracing=tracing)
    # In front of everything, the hot routes included: nothing under /products answers
    # without the gate's secret.
    app.middleware_stack = GateOnlyMiddleware(app.middleware_stack, settings.gate_secrets())
    return app
