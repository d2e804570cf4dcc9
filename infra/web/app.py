"""The app every HTTP process builds: ``build_app``, JSON responses, bodies, client addresses.

API.md: no request, however malformed, gets a 5xx or a traceback; bodies over 16 KiB get 413.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Lifespan

from infra.constants import MAX_BODY_BYTES
from infra.web import errors
from infra.web.assets import asset_routes
from infra.web.hotroutes import HotRoutes
from infra.web.metrics import Metrics, RequestMetricsMiddleware
from infra.web.middleware import LimitsMiddleware, RequestContextMiddleware
from infra.web.openapi import openapi_route

if TYPE_CHECKING:
    from infra.web.tracing import Tracing


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise errors.PayloadTooLarge(f"request bodies are limited to {limit} bytes")
    return bytes(body)


async def read_json_object(request: Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.InvalidRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise errors.InvalidRequest("the body must be a JSON object")
    return data


def build_app(
    routes: list[BaseRoute],
    lifespan: Lifespan[Starlette],
    metrics: Metrics,
    middleware: Sequence[Middleware] = (),
    hot_routes: Sequence[Route] = (),
    openapi: Mapping[str, Any] | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """Every HTTP process's app: request metrics outermost, then the header and body
    limits, then the app's own middleware; one JSON error shape for every failure.
    `hot_routes` (also listed in `routes`) are served around that stack (infra.web.hotroutes).
    Every app also serves the pages' shared files under ``/assets/`` (infra.web.assets) and,
    given its OpenAPI document (`openapi`, data: infra.web.openapi), ``GET /openapi.json``.
    Every request's X-Request-Id and trace (infra.web.trace) are taken in front of the whole
    stack, with its server span when `tracing` is on; the lifespan's end flushes the spans.

    The stack is built now rather than on the first request, as Starlette would, so that an
    app can stand something in front of all of it: ``app.middleware_stack = Outer(app.
    middleware_stack)`` (the gate's request ids do)."""
    served = [*routes, *asset_routes()]  # every process serves its pages' shared assets
    if openapi is not None:
        served.append(openapi_route(openapi))
    app = Starlette(
        routes=served,
        middleware=[
            Middleware(RequestMetricsMiddleware, metrics=metrics),
            Middleware(LimitsMiddleware),
            *middleware,
        ],
        exception_handlers=errors.exception_handlers(),
        lifespan=lifespan,
    )
    # API.md: anything else in a path is 404. Starlette would answer a trailing slash with a
    # 307 whose Location it builds from the client's Host header: a redirect anyone can aim
    # at another host, which a shared cache could even keep for others.
    app.router.redirect_slashes = False
    stack = RequestContextMiddleware(app.build_middleware_stack(), tracing)
    app.middleware_stack = HotRoutes(stack, hot_routes, metrics, tracing) if hot_routes else stack
    if tracing is not None:
        app.router.lifespan_context = _flushing(lifespan, tracing)
    return app


def _flushing(lifespan: Lifespan[Starlette], tracing: Tracing) -> Lifespan[Starlette]:
    @contextlib.asynccontextmanager
    async def flushing(app: Starlette) -> AsyncIterator[None]:
        try:
            async with lifespan(app):  # type: ignore[union-attr]
                yield
        finally:
            await tracing.shutdown()  # the last spans reach the collector

    return flushing


def retry_after_s(ms: float) -> str:
    return str(max(1, math.ceil(ms / 1000)))


class ClientAddress:
    """The client's IP: the peer, or behind trusted proxies the right-most untrusted hop."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def from_trusted_proxy(self, request: Request) -> bool:
        """Whether the peer itself is one of the trusted proxies: the upstream whose headers
        are believed (X-Forwarded-For, the trusted user header)."""
        return bool(self._trusted) and self._is_trusted(
            request.client.host if request.client else ""
        )

    def __call__(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a forged, unparseable hop: fall back to what we saw
        return peer
