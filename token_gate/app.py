"""The token gate: the public entry to the shop.

Catalog reads pass without a token. Everything under ``/products/{id}/orders`` needs an access
token for that product, verified in-process (no network call); the visitor's identity then
travels to the shop in headers the gate sets itself, after removing any the client sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from infra import errors
from infra.constants import (
    ACCESS_COOKIE,
    GATE_STRIPPED_HEADERS,
    HEADER_GATE_SECRET,
    HEADER_PRODUCT_ID,
    HEADER_REQUEST_ID,
    HEADER_TOKEN_ID,
    HEADER_VISITOR_ID,
    PRODUCT_ID_RE,
)
from infra.http import JSONResponse, LimitsMiddleware, exception_handlers
from infra.metrics import Metrics, RequestMetricsMiddleware
from infra.settings import Settings
from token_gate.codec import AccessToken, TokenCodec, TokenExpired, TokenInvalid

# Hop-by-hop headers (RFC 9110) never cross a proxy.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
UPSTREAM_RETRY_AFTER_S = "2"


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


def create_app(settings: Settings) -> Starlette:
    metrics = Metrics("flashsale_gate")
    codec = TokenCodec(settings.secret_keys)
    gate_secret = settings.gate_secrets()[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = httpx.AsyncClient(
            base_url=settings.shop_url,
            timeout=httpx.Timeout(10.0, connect=2.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        app.state.client = client
        try:
            yield
        finally:
            await client.aclose()

    async def forward(request: Request, extra: dict[str, str]) -> Response:
        client: httpx.AsyncClient = request.app.state.client
        # "%2E%2E" arrives decoded as "..", which httpx would resolve: the shop would get
        # another path (another product's orders, the admin API) than the one checked here.
        if any(segment in (".", "..") for segment in request.url.path.split("/")):
            raise errors.NotFound("no such resource")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k not in HOP_BY_HOP and k not in GATE_STRIPPED_HEADERS
        }
        headers.update(extra)
        headers[HEADER_GATE_SECRET] = gate_secret
        upstream = client.build_request(
            request.method,
            request.url.path,
            params=request.query_params,
            headers=headers,
            content=request.stream(),
        )
        try:
            reply = await client.send(upstream, stream=True)
        except httpx.HTTPError:
            metrics.inc("upstream_errors_total")
            raise errors.UpstreamUnavailable(
                "the shop is not answering; try again shortly",
                headers={"Retry-After": UPSTREAM_RETRY_AFTER_S},
            ) from None
        out_headers = {k: v for k, v in reply.headers.items() if k not in HOP_BY_HOP}
        return StreamingResponse(
            reply.aiter_raw(),
            status_code=reply.status_code,
            headers=out_headers,
            background=BackgroundTask(reply.aclose),
        )

    async def public(request: Request) -> Response:
        return await forward(request, {})

    async def orders(request: Request) -> Response:
        product_id = request.path_params["product_id"]
        if not PRODUCT_ID_RE.fullmatch(product_id):
            raise errors.NotFound("no such product")
        token = _access_token(request, codec, product_id)
        metrics.inc("tokens_accepted_total")
        identity = {
            HEADER_VISITOR_ID: token.visitor_id,
            HEADER_PRODUCT_ID: token.product_id,
            HEADER_TOKEN_ID: token.token_id,
        }
        if HEADER_REQUEST_ID in request.headers:
            identity[HEADER_REQUEST_ID] = request.headers[HEADER_REQUEST_ID]
        return await forward(request, identity)

    async def healthz(request: Request) -> Response:
        try:
            reply = await request.app.state.client.get("/healthz", timeout=2.0)
        except httpx.HTTPError:
            reply = None
        if reply is None or reply.status_code != 200:
            raise errors.UpstreamUnavailable(
                "the shop is not answering", headers={"Retry-After": UPSTREAM_RETRY_AFTER_S}
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
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestMetricsMiddleware, metrics=metrics),
            Middleware(LimitsMiddleware),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
