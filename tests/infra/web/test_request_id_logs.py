"""Every log line written while serving a request carries the request's X-Request-Id."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from infra.web.app import build_app
from infra.web.logs import _JsonFormatter, request_id
from infra.web.metrics import Metrics


async def _route(request: Request) -> Response:
    logging.getLogger("flashsale.test").warning("serving")
    return PlainTextResponse(request_id.get() or "-")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


async def test_the_request_id_reaches_the_log_lines_of_its_request() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter())
    logger = logging.getLogger("flashsale.test")
    logger.addHandler(handler)
    try:
        app = build_app([Route("/", _route)], _lifespan, Metrics("t"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            tagged = await client.get("/", headers={"X-Request-Id": "req-42"})
            untagged = await client.get("/")
            oversized = await client.get("/", headers={"X-Request-Id": "x" * 200})
    finally:
        logger.removeHandler(handler)
    assert (tagged.text, untagged.text, oversized.text) == ("req-42", "-", "-")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("request_id") for line in lines] == ["req-42", None, None]
    assert request_id.get() is None  # nothing leaks out of the request
