"""The queue server: the waiting room's public API and page."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.redis import create_redis
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web import errors
from infra.web.app import ClientAddress, JSONResponse, build_app
from infra.web.assets import serve_page_files
from infra.web.cookies import CookieSecurity
from infra.web.metrics import Metrics
from infra.web.trace import tracing_for
from queue_server import views
from queue_server.openapi import QUEUE_API
from queue_server.page import page_files
from token_gate.codec import TokenCodec

if TYPE_CHECKING:
    from infra.web.tracing import Tracing


async def healthz(request: Request) -> Response:
    ctx: views.QueueContext = request.app.state.ctx
    try:
        await ctx.redis.ping()
    except Exception:
        raise errors.Unavailable("redis is not answering", headers={"Retry-After": "1"}) from None
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings, tracing: Tracing | None = None) -> Starlette:
    # `tracing`: a test's own; by default the settings' (None, so no span, unless switched on).
    tracing = tracing or tracing_for(settings, "flashsale-queue")
    metrics = Metrics("flashsale_queue")
    metrics.counter("joins_total", "Joins per sale (created: a new place)", ["product", "created"])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = create_redis(settings.redis_url)
        client_address = ClientAddress(settings.trusted_proxies)
        app.state.ctx = views.QueueContext(
            settings=settings,
            redis=redis,
            scripts=SaleScripts(redis),
            codec=TokenCodec(settings.secret_keys),
            metrics=metrics,
            client_address=client_address,
            cookies=CookieSecurity(settings.queue_url, client_address),
        )
        try:
            yield
        finally:
            await redis.aclose()

    # The two routes a storm hammers: every visitor joins once and polls until admitted.
    hot = [
        Route("/queue/{product_id}/join", views.join, methods=["POST"]),
        Route("/queue/{product_id}/status", views.status, methods=["GET"]),
    ]
    routes = [
        *hot,
        Route("/queue/{product_id}/ticket", views.leave, methods=["DELETE"]),
        Route("/queue/{product_id}", views.sale_info, methods=["GET"]),
        Route("/wait/{product_id}", views.waiting_room, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    app = build_app(routes, lifespan, metrics, hot_routes=hot, openapi=QUEUE_API, tracing=tracing)
    serve_page_files(app, page_files())  # the waiting room's script and style, at /assets/
    return app
