from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from infra.constants import HEADER_GATE_SECRET
from infra.settings import Settings
from tests.support import running, serving, serving_shop
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Echo:
    """A stand-in upstream that records every request that reaches it."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    def header(self, index: int, name: str) -> list[str]:
        return [v for k, v in self.seen[index].headers if k == name]


def echo_app(echo: Echo) -> Starlette:
    async def record(request: Request) -> JSONResponse:
        body = await request.body()
        echo.seen.append(
            Seen(
                request.method,
                request.url.path,
                request.url.query,
                list(request.headers.items()),
                body,
            )
        )
        return JSONResponse({"echo": True, "path": request.url.path}, status_code=299)

    methods = ["GET", "POST", "DELETE", "PUT", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", record, methods=methods)])


@pytest.fixture
def gate_settings(redis_url: str) -> Settings:
    """Without an upstream; tests replace shop_upstream_url. Redis holds the visitor limit."""
    return Settings.from_env({}, dev=True, redis_url=redis_url)


@pytest.fixture
def codec(gate_settings: Settings) -> TokenCodec:
    return TokenCodec(gate_settings.secret_keys)


@pytest.fixture
def shop_settings(stack_settings: Settings) -> Settings:
    return stack_settings


@pytest.fixture
async def shop_url(shop_settings: Settings) -> AsyncIterator[str]:
    async with serving_shop(shop_settings) as url:
        yield url


@pytest.fixture
async def shop(shop_url: str, gate_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client that talks to the shop directly, as an operator does (with the gate's secret,
    which the shop wants on /products)."""
    secret = {HEADER_GATE_SECRET: gate_settings.gate_secrets()[0]}
    async with httpx.AsyncClient(base_url=shop_url, headers=secret) as client:
        yield client


@pytest.fixture
async def gate(gate_settings: Settings, shop_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gate(gate_settings.replace(shop_upstream_url=shop_url))
    async with running(app) as client:
        yield client


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    recorder = Echo()
    async with serving(echo_app(recorder)) as url:
        recorder.url = url
        yield recorder


@pytest.fixture
async def echo_gate(gate_settings: Settings, echo: Echo) -> AsyncIterator[httpx.AsyncClient]:
    """A gate whose upstream is the recording echo app."""
    async with running(create_gate(gate_settings.replace(shop_upstream_url=echo.url))) as client:
        yield client


def bearer(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}
