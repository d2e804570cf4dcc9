"""A stand-in shop the gate tests steer: its status, whether it hangs, and a count of every
request that reaches it (the proof that the gate answered something by itself)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.token_gate.conftest import serving

HANG_LIMIT_S = 10.0  # a hanging request gives up on its own, should a test forget to release it


@dataclass
class Upstream:
    url: str = ""
    status: int = 200
    hang: bool = False
    hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


def upstream_app(up: Upstream) -> Starlette:
    async def handle(request: Request) -> Response:
        await request.body()
        up.hits += 1
        if up.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(up.release.wait(), HANG_LIMIT_S)
        response: Response = JSONResponse({"hits": up.hits}, status_code=up.status)
        if request.url.path == "/products/cookie-jar":
            response.set_cookie("first", "1", httponly=True)
            response.set_cookie("second", "2", path="/products")
            response.headers.append("x-multi", "one")
            response.headers.append("x-multi", "two")
        return response

    methods = ["GET", "POST", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


@contextlib.asynccontextmanager
async def serving_upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    async with serving(upstream_app(up)) as url:
        up.url = url
        try:
            yield up
        finally:
            up.release.set()  # uvicorn waits for handlers still running before it stops


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, every_s: float = 0.02
) -> float:
    """Seconds until `check()` held; fails after `timeout_s`. Waits for a state, not a time."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s}s")
        await asyncio.sleep(every_s)
    return time.monotonic() - start


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a family's samples that carry these labels, from a /metrics page (0 when
    there are none), read with prometheus-client's own parser."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def breaker_state(gate: httpx.AsyncClient) -> str:
    text = (await gate.get("/metrics")).text
    for state in ("closed", "open", "half_open"):
        if metric(text, "flashsale_gate_upstream_breaker_state", state=state) == 1:
            return state
    raise AssertionError(f"no breaker state in /metrics:\n{text}")
