"""Every log line written while serving a request carries the request's X-Request-Id (kept
or made) and its trace id."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
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
    # A usable id is kept; none, or one over 128 characters, is replaced by one made here.
    assert tagged.text == "req-42"
    assert re.fullmatch("[0-9a-f]{32}", untagged.text) and re.fullmatch(
        "[0-9a-f]{32}", oversized.text
    )
    replies = (tagged, untagged, oversized)
    assert [reply.headers["x-request-id"] for reply in replies] == [r.text for r in replies]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("request_id") for line in lines] == [r.text for r in replies]
    assert all(re.fullmatch("[0-9a-f]{32}", line["trace_id"]) for line in lines)
    assert request_id.get() is None  # nothing leaks out of the request
