"""The three public HTTP apps under the server every process runs in production
(infra.web.serve: uvicorn with HttpProtocol), on real Valkey, PostgreSQL and tansu, once per
module; and a raw socket client, because the interesting requests are the ones httpx will not
send (a control character in a path, a trickle, a head without end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.types import ASGIApp

from infra.settings import Settings
from infra.web.serve import HttpProtocol, uvicorn_options
from queue_server.app import create_app as create_queue
from shop.app import create_app as create_shop
from tests.support import sale_body
from tests.token_gate.conftest import Echo, echo_app
from token_gate.app import create_app as create_gate

ANSWER_TIMEOUT_S = 20.0  # generous: the machine is shared


@pytest.fixture(autouse=True)
def no_error_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """API.md: no request, however malformed, produces a traceback. The servers run in this
    process, so an error any of them logs during a test is in `caplog`."""
    yield
    logged = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not logged, [f"{r.name}: {r.getMessage()}" for r in logged]


@contextlib.asynccontextmanager
async def production_server(
    app: ASGIApp, settings: Settings, **overrides: Any
) -> AsyncIterator[tuple[str, int]]:
    """`app` under the production uvicorn options (with `overrides`, e.g. a protocol class
    with shorter timeouts), on a socket bound first; yields (host, port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    options = {**uvicorn_options(settings, 0), "log_level": "warning", **overrides}
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after this answer

    def json(self) -> Any:
        return orjson.loads(self.body)


async def read_answer(reader: asyncio.StreamReader, timeout_s: float = ANSWER_TIMEOUT_S) -> Answer:
    async with asyncio.timeout(timeout_s):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        closed = headers.get("connection", "").lower() == "close"
    return Answer(status, headers, body, closed)


async def exchange(address: tuple[str, int], request: bytes) -> Answer:
    """Send `request` as it is on a new connection and read one answer."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        return await read_answer(reader)
    finally:
        writer.close()


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + body


def assert_json_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body


async def wait_closed(reader: asyncio.StreamReader, timeout_s: float) -> float:
    """Seconds until the server closed the connection (EOF), reading whatever it sent."""
    start = time.monotonic()
    async with asyncio.timeout(timeout_s):
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:  # a reset (we were still sending) is a close as well
            pass
    return time.monotonic() - start


class QuickProtocol(HttpProtocol):
    """The production protocol with a short read deadline, so a slow-client test takes a
    second instead of REQUEST_READ_TIMEOUT_S."""

    read_timeout_s = 1.0


@dataclass
class Platform:
    gate: tuple[str, int]
    queue: tuple[str, int]
    shop: tuple[str, int]
    settings: Settings


@pytest.fixture(scope="module")
async def platform(stack_settings: Settings) -> AsyncIterator[Platform]:
    """Gate, queue server and shop, each under the production server, the gate in front of
    the shop; the visitor limit off, so a test's many requests are all answered."""
    settings = stack_settings.replace(visitor_rate=0.0, join_rate_per_ip=0.0)
    shop_app = create_shop(settings)
    async with contextlib.AsyncExitStack() as stack:
        shop = await stack.enter_async_context(production_server(shop_app, settings))
        await shop_app.state.ctx.producer.wait_connected(30)
        gate_settings = settings.replace(shop_upstream_url=f"http://{shop[0]}:{shop[1]}")
        gate = await stack.enter_async_context(
            production_server(create_gate(gate_settings), gate_settings)
        )
        queue = await stack.enter_async_context(production_server(create_queue(settings), settings))
        yield Platform(gate, queue, shop, gate_settings)


@pytest.fixture(scope="module")
async def product_id(platform: Platform) -> str:
    """An open sale, created through the shop's admin API."""
    body = orjson.dumps(sale_body(per_user_limit=2))
    answer = await exchange(
        platform.shop,
        post("/admin/products", body, f"Authorization: Bearer {platform.settings.admin_key}"),
    )
    assert answer.status == 201, answer.body
    return str(answer.json()["id"])


@pytest.fixture
async def echo(stack_settings: Settings) -> AsyncIterator[Echo]:
    """A stand-in shop that records every request that reaches it."""
    recorder = Echo()
    async with production_server(echo_app(recorder), stack_settings) as (host, port):
        recorder.url = f"http://{host}:{port}"
        yield recorder
