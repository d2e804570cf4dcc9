"""The token gate: the public entry to the shop.

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

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.constants import (
    ACCESS_COOKIE,
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
from infra.web.app import JSONResponse, build_app, read_body, retry_after_s
from infra.web.metrics import Labels, Metrics
from token_gate.breaker import STATES, BreakerOpen, CircuitBreaker
from token_gate.codec import AccessToken, TokenCodec, TokenExpired, TokenInvalid
from token_gate.proxy import build_response, upstream_headers
from token_gate.ratelimit import VisitorLimiter
from token_gate.request_id import RequestIdMiddleware

log = logging.getLogger("flashsale.gate")

UPSTREAM_TIMEOUT = httpx.Timeout(UPSTREAM_READ_TIMEOUT_S, connect=UPSTREAM_CONNECT_TIMEOUT_S)
# The shop's own "I cannot serve now" answers: passed on to the client, but they count
# against the breaker like a refused connection.
UPSTREAM_FAILURE_STATUSES = frozenset({502, 503, 504})


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


class _Gate(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside even Starlette's ServerErrorMiddleware, so that an unexpected 500 carries the
        # request id as well: that is the answer whose id someone will go looking for.
        return RequestIdMiddleware(super().build_middleware_stack())


def create_app(
    settings: Settings,
    *,
    upstream_timeout: httpx.Timeout = UPSTREAM_TIMEOUT,
    breaker: CircuitBreaker | None = None,
) -> Starlette:
    """The gate; tests pass a short `upstream_timeout` and a breaker with a short cool-down."""
    metrics = Metrics("flashsale_gate")
    codec = TokenCodec(settings.secret_keys)
    gate_secret = settings.gate_secrets()[0]
    breaker = breaker or CircuitBreaker()
    metrics.counter("upstream_errors_total", "Shop calls that failed, by cause")
    metrics.counter("upstream_rejected_total", "Requests the open breaker answered itself")
    metrics.counter("rate_limited_total", "Order-path requests over the visitor's rate")
    metrics.counter("tokens_accepted_total", "Order-path requests with a valid access token")

    async def breaker_state() -> dict[Labels, float]:
        # One series per state, the current one 1 (the Prometheus way to export an enum).
        current = breaker.state
        return {(("state", state),): float(state == current) for state in STATES}

    metrics.gauge("upstream_breaker_state", "Circuit breaker in front of the shop", breaker_state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = create_redis(settings.redis_url)
        client = httpx.AsyncClient(
            base_url=settings.shop_url,
            timeout=upstream_timeout,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        app.state.redis = redis
        app.state.client = client
        app.state.limiter = VisitorLimiter(SaleScripts(redis), settings.visitor_rate)
        app.state.breaker = breaker
        try:
            yield
        finally:
            await client.aclose()
            await redis.aclose()

    async def call_shop(client: httpx.AsyncClient, upstream: httpx.Request) -> Response:
        try:
            ticket = breaker.acquire()
        except BreakerOpen as exc:
            metrics.inc("upstream_rejected_total")
            raise _unavailable(retry_after_s(exc.retry_after_s * 1000)) from None
        try:
            reply = await client.send(upstream, stream=True)
            try:
                # Read whole (bodies are small JSON): a timeout in the middle of the body is
                # then a clean 503, not a 200 cut short. Raw bytes, so Content-Encoding holds.
                body = b"".join([chunk async for chunk in reply.aiter_raw()])
            finally:
                await reply.aclose()
        except httpx.HTTPError as exc:
            breaker.failure(ticket)
            metrics.inc("upstream_errors_total", cause=type(exc).__name__)
            log.warning(
                "shop call failed: %s",
                type(exc).__name__,
                extra={"request_id": upstream.headers.get("x-request-id", "")},
            )
            raise _unavailable(str(UPSTREAM_RETRY_AFTER_S)) from None
        except BaseException:
            breaker.release(ticket)  # cancelled (client gone, shutdown): no verdict on the shop
            raise
        if reply.status_code in UPSTREAM_FAILURE_STATUSES:
            breaker.failure(ticket)
            metrics.inc("upstream_errors_total", cause=f"status_{reply.status_code}")
        else:
            breaker.success(ticket)
        return build_response(reply, body, head=upstream.method == "HEAD")

    async def forward(request: Request, identity: dict[str, str]) -> Response:
        # "%2E%2E" arrives decoded as "..", which httpx would resolve: the shop would get
        # another path (another product's orders, the admin API) than the one checked here.
        if any(segment in (".", "..") for segment in request.url.path.split("/")):
            raise errors.NotFound("no such resource")
        # Read (at most 16 KiB) before calling: a chunked body declares no length, so
        # LimitsMiddleware cannot refuse it up front, and nothing of it may reach the shop.
        body = await read_body(request)
        headers = upstream_headers(request.headers, {**identity, HEADER_GATE_SECRET: gate_secret})
        query = request.scope.get("query_string", b"")
        # The raw query string: Starlette's QueryParams would keep one value of ?a=1&a=2.
        url = httpx.URL(path=request.url.path, query=query) if query else request.url.path
        client: httpx.AsyncClient = request.app.state.client
        upstream = client.build_request(request.method, url, headers=headers, content=body)
        return await call_shop(client, upstream)

    async def public(request: Request) -> Response:
        return await forward(request, {})

    async def orders(request: Request) -> Response:
        product_id = path_sale_keys(request).product_id
        token = _access_token(request, codec, product_id)
        metrics.inc("tokens_accepted_total")
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
        try:
            reply = await request.app.state.client.get(
                "/healthz", timeout=UPSTREAM_HEALTH_TIMEOUT_S
            )
        except httpx.HTTPError:
            reply = None
        if reply is None or reply.status_code != 200:
            raise errors.UpstreamUnavailable(
                "the shop is not answering", headers={"Retry-After": str(UPSTREAM_RETRY_AFTER_S)}
            )
        return JSONResponse({"status": "ok"})

    order_methods = ["GET", "POST", "DELETE"]
    routes = [
        Route("/products", public, methods=["GET"]),
        Route("/products/{product_id}", public, methods=["GET"]),
        Route("/products/{product_id}/orders", orders, methods=order_methods),
        Route("/products/{product_id}/orders/{rest:path}", orders, methods=order_methods),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    return build_app(routes, lifespan, metrics, app_class=_Gate)
