"""The few routes a storm hammers, served straight from the ASGI scope.

Every request of a Starlette app passes ServerErrorMiddleware, our three middlewares,
ExceptionMiddleware and the router, and each layer wraps ``send`` once more. For a poll that
costs a millisecond of Python in all, that stack was a fifth of the CPU (py-spy; bench/README.md).
``HotRoutes`` sits in front of it and runs the endpoints of a few named routes directly, doing
inline what the stack does for them: the header and body limits, the request id in the logging
context, the request metrics, and the same JSON answer to every error. Every other request,
and any method the hot route does not name (HEAD, say), goes down the whole stack as before.
The hot routes stay registered with the app as well, so both paths serve the same endpoints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.web import errors
from infra.web.metrics import Metrics
from infra.web.middleware import over_limits
from infra.web.trace import answer_header, begin_request, end_request

if TYPE_CHECKING:
    from infra.web.tracing import Tracing

_Hot = tuple[re.Pattern[str], dict[str, Convertor[Any]], Callable[..., Any], str]


class HotRoutes:
    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[Route],
        metrics: Metrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing  # None (off): no span is made, no tracer called
        self._by_method: dict[str, list[_Hot]] = {}
        for route in routes:
            for method in route.methods or ():
                if method != "HEAD":  # Starlette adds HEAD to GET routes; leave it to Starlette
                    hot = (route.path_regex, route.param_convertors, route.endpoint, route.path)
                    self._by_method.setdefault(method, []).append(hot)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (hot := self._by_method.get(scope["method"])):
            path = scope["path"]
            for regex, convertors, endpoint, template in hot:
                match = regex.match(path)
                if match is not None:
                    params = {k: convertors[k].convert(v) for k, v in match.groupdict().items()}
                    scope["path_params"] = params
                    await self._serve(endpoint, template, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        endpoint: Callable[..., Any],
        template: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        start = time.perf_counter()
        request = Request(scope, receive)
        trace = begin_request(scope, self.tracing)
        status = 500
        try:
            refused = over_limits(scope)
            if refused is not None:
                response = errors.error_response(refused)
            else:
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    # The edge of the request, as ServerErrorMiddleware is for the others: any
                    # error gets the answer build_app's handlers give it, never a traceback.
                    response = await errors.answer(request, exc)
            response.raw_headers.append(answer_header(trace))
            status = response.status_code
            await response(scope, receive, send)
        finally:
            end_request(trace, self.tracing, template, status)
        elapsed = time.perf_counter() - start
        self.metrics.observe_request(scope["method"], template, response.status_code, elapsed)
