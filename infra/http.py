"""HTTP plumbing shared by every Starlette app: JSON responses, the error shape, limits.

API.md: every error is ``{"error": code, "detail": sentence}``; no request, however malformed,
gets a 5xx or a traceback; bodies over 16 KiB get 413.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from infra import errors
from infra.constants import HEADER_REQUEST_ID, MAX_BODY_BYTES, REQUEST_ID_MAX_CHARS
from infra.logs import request_id
from infra.metrics import Metrics, RequestMetricsMiddleware

log = logging.getLogger("flashsale.http")

MAX_HEADER_BYTES = 8 * 1024
_REQUEST_ID = HEADER_REQUEST_ID.encode()


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: errors.ApiError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.code, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    mapped: errors.ApiError
    if exc.status_code == 405:
        mapped = errors.MethodNotAllowed(headers=dict(exc.headers or {}))
    elif exc.status_code == 404:
        mapped = errors.NotFound()
    else:
        mapped = errors.InvalidRequest(str(exc.detail))
        mapped.status_code = exc.status_code
    return error_response(mapped)


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", type(exc).__name__)
    return error_response(
        errors.Unavailable(
            "the sale store is not answering; try again shortly", headers={"Retry-After": "1"}
        )
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its traceback by Starlette; the client sees only the JSON shape.
    return JSONResponse(
        {"error": "internal", "detail": "unexpected error; it has been logged"}, status_code=500
    )


def exception_handlers() -> dict[Any, Any]:
    return {
        errors.ApiError: _api_error,
        HTTPException: _http_error,
        RedisConnectionError: _redis_down,
        RedisTimeoutError: _redis_down,
        Exception: _unexpected,
    }


class RequestIdContextMiddleware:
    """Puts the request's X-Request-Id (set by the gate, or by the client of a process that
    faces clients) into the logging context, so each log line of the request carries it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = next((v for k, v in scope["headers"] if k == _REQUEST_ID), None)
        if value is None or not 1 <= len(value) <= REQUEST_ID_MAX_CHARS or not value.isascii():
            await self.app(scope, receive, send)
            return
        token = request_id.set(value.decode("ascii", "replace"))
        try:
            await self.app(scope, receive, send)
        finally:
            request_id.reset(token)


class LimitsMiddleware:
    """Refuses oversized headers (431) and bodies (413) before any route runs.

    A declared Content-Length over the limit is refused at once; a chunked body is counted as
    it streams and cut off at the limit, so no route ever buffers more than MAX_BODY_BYTES.
    """

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            await error_response(errors.HeadersTooLarge())(scope, receive, send)
            return
        for key, value in headers:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_body:
                    await error_response(errors.PayloadTooLarge())(scope, receive, send)
                    return
        await self.app(scope, receive, send)


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
    app_class: type[Starlette] = Starlette,
) -> Starlette:
    """Every HTTP process's app: request metrics outermost, then the header and body
    limits, then the app's own middleware; one JSON error shape for every failure.
    `app_class` lets an app wrap even Starlette's own error handling (the gate does)."""
    return app_class(
        routes=routes,
        middleware=[
            Middleware(RequestMetricsMiddleware, metrics=metrics),
            Middleware(RequestIdContextMiddleware),
            Middleware(LimitsMiddleware),
            *middleware,
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )


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
