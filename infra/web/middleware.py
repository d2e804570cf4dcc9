"""The middleware every HTTP process runs before any route: limits and the request id."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from infra.constants import (
    HEADER_REQUEST_ID,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    REQUEST_ID_MAX_CHARS,
)
from infra.web import errors
from infra.web.logs import request_id

_REQUEST_ID = HEADER_REQUEST_ID.encode()


def request_id_of(scope: Scope) -> str | None:
    """The request's X-Request-Id when it is one we keep (1-128 ASCII characters)."""
    value = next((v for k, v in scope["headers"] if k == _REQUEST_ID), None)
    if value is None or not 1 <= len(value) <= REQUEST_ID_MAX_CHARS or not value.isascii():
        return None
    return value.decode("ascii", "replace")


def over_limits(scope: Scope, max_body: int = MAX_BODY_BYTES) -> errors.ApiError | None:
    """What every request is refused for before any route runs (LimitsMiddleware and the hot
    routes both ask here): 404 for a path no route can name, 431 for headers over
    MAX_HEADER_BYTES, 413 for a declared body over `max_body`."""
    path = scope["path"]
    # Every name in a path of this platform (ids, assets) is printable ASCII. A decoded control
    # character ("%00", "%0A") or a byte that was not UTF-8 ("%FF" decodes to U+FFFD) names
    # nothing, wherever it stands: 404 at once, so no route, log line or upstream sees it.
    if not (path.isascii() and path.isprintable()):
        return errors.NotFound("no such resource")
    headers = scope["headers"]
    if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
        return errors.HeadersTooLarge()
    for key, value in headers:
        if key == b"content-length" and (not value.isdigit() or int(value) > max_body):
            return errors.PayloadTooLarge()
    return None


class RequestIdContextMiddleware:
    """Puts the request's X-Request-Id (set by the gate, or by the client of a process that
    faces clients) into the logging context, so each log line of the request carries it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = request_id_of(scope)
        if value is None:
            await self.app(scope, receive, send)
            return
        token = request_id.set(value)
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
        refused = over_limits(scope, self.max_body)
        if refused is not None:
            await errors.error_response(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)
