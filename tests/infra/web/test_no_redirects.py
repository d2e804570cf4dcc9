"""No app answers a trailing slash with a redirect to the client's Host (API.md: 404)."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from infra.web.app import build_app
from infra.web.metrics import Metrics


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hi")


async def test_a_trailing_slash_is_404_and_never_a_redirect() -> None:
    app = build_app([Route("/things/{id}", _hello)], None, Metrics("t"))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        assert (await client.get("/things/a")).status_code == 200
        reply = await client.get("/things/a/", headers={"host": "evil.example"})
    assert reply.status_code == 404
    assert "location" not in reply.headers
    assert reply.json()["error"] == "not_found"
