"""The fuzz harness (tests/api/fuzz.py) fails where it should: a 5xx, a status the document
does not name, and a refused request that wrote to the store each come out as failures."""

from __future__ import annotations

import asyncio

import schemathesis
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.web.openapi import document, error, ok, operation
from tests.api import fuzz
from tests.api.conftest import store_state
from tests.support import serving, unique_id


async def test_the_harness_reports_5xx_undocumented_statuses_and_refused_writes(
    redis: Redis,
) -> None:
    key = f"fs:{unique_id('harness')}"

    async def boom(request: Request) -> Response:
        return JSONResponse({"error": "internal", "detail": "x"}, status_code=500)

    async def teapot(request: Request) -> Response:
        return JSONResponse({"error": "teapot", "detail": "x"}, status_code=418)

    async def refuse_but_write(request: Request) -> Response:
        await redis.incr(key)
        return JSONResponse({"error": "not_found", "detail": "x"}, status_code=404)

    async def fine(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/boom", boom, methods=["GET"]),
            Route("/teapot", teapot, methods=["GET"]),
            Route("/write", refuse_but_write, methods=["POST"]),
            Route("/fine", fine, methods=["GET"]),
        ]
    )
    answers = {"200": ok("x", {"type": "object"}), "404": error("x", "not_found")}
    doc = document(
        "harness",
        "x",
        {
            "/boom": {"get": operation("boom", "x", {**answers, "500": error("x")})},
            "/teapot": {"get": operation("teapot", "x", answers)},
            "/write": {"post": operation("write", "x", answers)},
            "/fine": {"get": operation("fine", "x", answers)},
        },
    )
    async with serving(app) as url:
        target = fuzz.Target(
            schema=schemathesis.openapi.from_dict(doc),
            base_url=url,
            loop=asyncio.get_running_loop(),
            snapshot=lambda: store_state(redis),
            credentials=[("none", {})],
            path_values={},
            examples=5,
            seed=fuzz.SEED,
            deadline_s=30,
        )
        report = await asyncio.to_thread(fuzz.run, target)
    failed = {failure.split(" (seed")[0]: failure for failure in report.failures}
    assert set(failed) == {"GET /boom", "GET /teapot", "POST /write"}
    assert "Server error" in failed["GET /boom"]
    assert "Undocumented status code" in failed["GET /teapot"]
    assert "wrote to the stores" in failed["POST /write"]
    assert report.by_operation["GET /fine"] >= 1
    await redis.delete(key)
