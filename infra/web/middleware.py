"""The middleware every HTTP process runs before any route: limits, the request id and trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.constants import MAX_BODY_BYTES, MAX_HEADER_BYTES
from infra.web import errors
from infra.web.metrics import route_of
from infra.web.trace import answer_header, begin_request, end_request, received_from

if TYPE_CHECKING:
    from infra.web.tracing import Tracing


def request_id_of(scope: Scope) -> str | None:
    """The request's X-Request-Id when it is one we keep (one header, 1-128 visible ASCII)."""
    return received_from(scope["headers"])[0]


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


class RequestContextMiddleware:
    """Every request that is not a hot route's (those do the same inline): its X-Request-Id
    and trace, kept or made (infra.web.trace), in the logging context while it is served; the
    id on its answer; its server span when tracing is on. It stands outside Starlette's whole
    stack (build_app), so an unexpected 500 carries the id too: the one someone will look for.
    """

    def __init__(self, app: ASGIApp, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = begin_request(scope, self.tracing)
        line = answer_header(trace)
        status = 500  # unless an answer starts: an error that escaped everything

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != line[0]]
                message = {**message, "headers": [*headers, line]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            end_request(trace, self.tracing, route_of(scope), status)


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
