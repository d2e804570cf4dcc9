"""The token gate: the public entry to the shop, and the shop page for people (shop_page.py).

Catalog reads pass without a token. Everything under ``/products/{id}/orders`` needs an access
token for that product, verified in-process (no network call), then a token from the visitor's
rate-limit bucket; the visitor's identity travels to the shop in headers the gate sets itself,
after removing any the client sent. Calls to the shop go through a circuit breaker, so a dead
or drowning shop is answered for at once instead of piling up timeouts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from infra import events
from infra.constants import (
    ACCESS_COOKIE,
    EVENT_CIRCUIT_QUIET_S,
    HEADER_GATE_SECRET,
    HEADER_PRODUCT_ID,
    HEADER_TOKEN_ID,
    HEADER_VISITOR_ID,
    UPSTREAM_CONNECT_TIMEOUT_S,
    UPSTREAM_HEALTH_TIMEOUT_S,
    UPSTREAM_READ_TIMEOUT_S,
    UPSTREAM_RETRY_AFTER_S,
)
from infra.redis import create_redis
from infra.sale.scripts import SaleScripts
from infra.sale.views import path_sale_keys
from infra.settings import Settings
from infra.web import errors
from infra.web.app import ClientAddress, JSONResponse, build_app, read_body, retry_after_s
from infra.web.assets import serve_page_files
from infra.web.cookies import CookieSecurity
from infra.web.metrics import Labels, Metrics
from infra.web.trace import tracing_for
from token_gate.breaker import STATES, BreakerOpen, CircuitBreaker
from token_gate.codec import AccessToken, TokenCodec, TokenExpired, TokenInvalid
from token_gate.openapi import GATE_API
from token_gate.proxy import build_response, upstream_headers
from token_gate.ratelimit import VisitorLimiter
from token_gate.shop_page import ShopPage, page_files
from token_gate.upstream import UpstreamError, Upstreams, UpstreamTimeout

if TYPE_CHECKING:
    from infra.web.tracing import Tracing

log = logging.getLogger("flashsale.gate")

UPSTREAM_TIMEOUT = UpstreamTimeout(
    connect_s=UPSTREAM_CONNECT_TIMEOUT_S, read_s=UPSTREAM_READ_TIMEOUT_S
)
# The shop's own "I cannot serve now" answers: passed on to the client, but they count
# against the breaker like a refused connection.
# The shop's own 503 is an answer (it is alive, says why, and gives its Retry-After): passed
# on, with no verdict on the shop. A PostgreSQL outage makes pay and cancel 503, and opening
# the breaker on them would refuse every order too, which needs only Valkey and the broker.
# Only a shop that does not answer (refused, timed out, or a 502/504 from between) opens it.
UPSTREAM_FAILURE_STATUSES = frozenset({502, 504})
# The gate's token refusals (API.md) -> the `reason` of flashsale_gate_tokens_rejected_total.
TOKEN_REJECTIONS = {
    "token_missing": "missing",
    "token_invalid": "invalid",
    "token_expired": "expired",
    "token_wrong_product": "wrong_product",
}


def _access_token(request: Request, codec: TokenCodec, product_id: str) -> AccessToken:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    raw = value.strip() if scheme.lower() == "bearer" else ""
    raw = raw or request.cookies.get(ACCESS_COOKIE, "")
    if not raw:
        raise errors.TokenMissing("send the access token as a Bearer token or the fs_access cookie")
    try:
        token = codec.read_access(raw)
    except TokenExpired:
        raise errors.TokenExpired("the access token has expired; join the line again") from None
    except TokenInvalid:
        raise errors.TokenInvalid("the access token is not valid") from None
    if token.product_id != product_id:
        raise errors.TokenWrongProduct("the access token is for another product")
    return token


def _unavailable(retry_after: str) -> errors.UpstreamUnavailable:
    return errors.UpstreamUnavailable(
        "the shop is not answering; try again shortly", headers={"Retry-After": retry_after}
    )


def _target(scope: Scope) -> str:
    """The request target exactly as the client sent it (path and raw query): the shop then
    decodes the very path the gate checked, and ?a=1&a=2 keeps both values."""
    raw_path = scope.get("raw_path") or quote(scope["path"]).encode()
    query = scope.get("query_string", b"")
    return (raw_path + b"?" + query if query else raw_path).decode("latin-1")


def create_app(
    settings: Settings,
    *,
    upstream_timeout: UpstreamTimeout = UPSTREAM_TIMEOUT,
    breaker: CircuitBreaker | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """The gate; tests pass a short `upstream_timeout`, a breaker with a short cool-down, and
    their own `tracing` (by default the settings' own: None unless it is switched on)."""
    metrics = Metrics("flashsale_gate")
    tracing = tracing or tracing_for(settings, "flashsale-gate")
    codec = TokenCodec(settings.secret_keys)
    gate_secret = settings.gate_secrets()[0]
    breaker = breaker or CircuitBreaker()
    metrics.counter("upstream_errors_total", "Shop calls that failed, by cause")
    metrics.counter("upstream_rejected_total", "Requests the open breaker answered itself")
    metrics.counter("rate_limited_total", "Order-path requests over the visitor's rate")
    metrics.counter(
        "tokens_accepted_total", "Order-path requests with a valid access token", ["product"]
    )
    # By reason only: a refused token names no sale we can believe (the path's product is
    # whatever the client sent), and an unbounded label is what /metrics must never have.
    metrics.counter(
        "tokens_rejected_total", "Order-path requests refused for their token", ["reason"]
    )
    for reason in TOKEN_REJECTIONS.values():
        metrics.inc("tokens_rejected_total", 0, reason=reason)  # every series from the start

    async def breaker_state() -> dict[Labels, float]:
        # One series per state, the current one 1 (the Prometheus way to export an enum).
        current = breaker.state
        return {(("state", state),): float(state == current) for state in STATES}

    metrics.gauge("upstream_breaker_state", "Circuit breaker in front of the shop", breaker_state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = create_redis(settings.redis_url)
        app.state.redis = redis
        app.state.limiter = VisitorLimiter(SaleScripts(redis), settings.visitor_rate)
        app.state.breaker = breaker

        def circuit_opened() -> None:
            # The webhooks' CIRCUIT_OPENED, in a task of its own (the breaker opens inside a
            # request): one per EVENT_CIRCUIT_QUIET_S, whichever gate replica opened first.
            events.fire(
                redis,
                events.CIRCUIT_OPENED,
                once=events.global_marker(events.CIRCUIT_OPENED),
                once_ttl_s=EVENT_CIRCUIT_QUIET_S,
                gate=f"{settings.host}:{settings.gate_port}",
                failures=breaker.failure_threshold,
                cooldown_s=breaker.cooldown_s,
            )

        breaker.on_open(circuit_opened)
        try:
            async with Upstreams(settings.shop_urls, upstream_timeout, tracing) as upstream:
                app.state.upstream = upstream
                yield
        finally:
            breaker.off_open(circuit_opened)
            await events.drain()  # a circuit event on its way still gets its Redis client
            await redis.aclose()

    async def call_shop(
        upstream: Upstreams, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        try:
            ticket = breaker.acquire()
        except BreakerOpen as exc:
            metrics.inc("upstream_rejected_total")
            raise _unavailable(retry_after_s(exc.retry_after_s * 1000)) from None
        try:
            reply = await upstream.request(method, target, headers, body)
        except UpstreamError as exc:
            breaker.failure(ticket)
            metrics.inc("upstream_errors_total", cause=exc.cause)
            request_id = next((v for k, v in headers if k.lower() == "x-request-id"), "")
            log.warning("shop call failed: %s", exc.cause, extra={"request_id": request_id})
            raise _unavailable(str(UPSTREAM_RETRY_AFTER_S)) from None
        except BaseException:
            breaker.release(ticket)  # cancelled (client gone, shutdown): no verdict on the shop
            raise
        if reply.status in UPSTREAM_FAILURE_STATUSES:
            breaker.failure(ticket)
            metrics.inc("upstream_errors_total", cause=f"status_{reply.status}")
        else:
            breaker.success(ticket)
        return build_response(reply, head=method == "HEAD")

    async def forward(request: Request, identity: dict[str, str]) -> Response:
        # "%2E%2E" arrives decoded as "..", which the shop would resolve: it would get
        # another path (another product's orders, the admin API) than the one checked here.
        if any(segment in (".", "..") for segment in request.scope["path"].split("/")):
            raise errors.NotFound("no such resource")
        # Read (at most 16 KiB) before calling: a chunked body declares no length, so
        # LimitsMiddleware cannot refuse it up front, and nothing of it may reach the shop.
        body = await read_body(request)
        headers = upstream_headers(request.headers, {**identity, HEADER_GATE_SECRET: gate_secret})
        return await call_shop(
            request.app.state.upstream, request.method, _target(request.scope), headers, body
        )

    async def public(request: Request) -> Response:
        return await forward(request, {})

    async def product(request: Request) -> Response:
        # The gate applies the id rule itself: a bad id is refused here, never passed on.
        path_sale_keys(request)
        return await forward(request, {})

    async def orders(request: Request) -> Response:
        product_id = path_sale_keys(request).product_id
        try:
            token = _access_token(request, codec, product_id)
        except errors.ApiError as exc:
            metrics.inc("tokens_rejected_total", reason=TOKEN_REJECTIONS[exc.code])
            raise
        metrics.inc("tokens_accepted_total", product=token.product_id)
        limiter: VisitorLimiter = request.app.state.limiter
        quota = await limiter.take(token.product_id, token.visitor_id)
        limit_headers = quota.headers() if quota else {}
        if quota and not quota.allowed:
            metrics.inc("rate_limited_total")
            raise errors.RateLimited(
                "too many requests from this visitor; slow down",
                headers={"Retry-After": quota.retry_after(), **limit_headers},
            )
        identity = {
            HEADER_VISITOR_ID: token.visitor_id,
            HEADER_PRODUCT_ID: token.product_id,
            HEADER_TOKEN_ID: token.token_id,
        }
        try:
            response = await forward(request, identity)
        except errors.ApiError as exc:
            exc.headers.update(limit_headers)  # the quota was spent: say so on errors too
            raise
        response.headers.update(limit_headers)
        return response

    async def healthz(request: Request) -> Response:
        # Redis first: its errors become 503 `unavailable` through the app's handler.
        await request.app.state.redis.ping()
        upstream: Upstreams = request.app.state.upstream
        try:
            reply = await upstream.request(
                "GET", "/healthz", [], timeout_s=UPSTREAM_HEALTH_TIMEOUT_S
            )
        except UpstreamError:
            reply = None
        if reply is None or reply.status != 200:
            raise errors.UpstreamUnavailable(
                "the shop is not answering", headers={"Retry-After": str(UPSTREAM_RETRY_AFTER_S)}
            )
        return JSONResponse({"status": "ok"})

    order_methods = ["GET", "POST", "DELETE"]
    # What a drop hammers: the product page, then the orders of every admitted visitor.
    hot = [
        Route("/products/{product_id}", product, methods=["GET"]),
        Route("/products/{product_id}/orders", orders, methods=order_methods),
        Route("/products/{product_id}/orders/{rest:path}", orders, methods=order_methods),
    ]
    cookies = CookieSecurity(settings.gate_url, ClientAddress(settings.trusted_proxies))
    shop_page = ShopPage(codec, settings.queue_url, cookies)
    routes = [
        Route("/products", public, methods=["GET"]),
        *hot,
        Route("/shop/{product_id}", shop_page.endpoint, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    # Every answer carries the request id, an unexpected 500 included (infra.web.trace, in
    # front of Starlette's whole stack); the shop gets it and the trace (token_gate.proxy).
    app = build_app(routes, lifespan, metrics, hot_routes=hot, openapi=GATE_API, tracing=tracing)
    serve_page_files(app, page_files())  # the shop page's script and style, at /assets/
    return app
