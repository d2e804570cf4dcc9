"""The waiting-room page in a real browser (Debian's Chromium driven by Playwright) against the
real queue server under uvicorn; the line moves by the scheduler's own admission ticks.

Screenshots land in the test's tmp dir (``<basetemp>/test_*/``) for a human to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette

from infra.settings import Settings
from queue_server.app import create_app
from tests.support import new_sale, open_sale
from token_gate.codec import TokenCodec

CHROMIUM = "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: run `apt-get install -y chromium` "
        "(Playwright cannot download its own browser here)",
        allow_module_level=True,
    )
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is missing: pip install -e '.[dev]'"
)
Page = playwright_api.Page
expect = playwright_api.expect

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# poll_after_ms is capped at abandon_s / 3: with 10 s the page asks at least every 3.3 s, so
# each step of the line shows within a few seconds.
ABANDON_S = 10
STEP_TIMEOUT_MS = 10_000

Tick = Callable[[str], Awaitable[tuple[str, ...]]]


@contextlib.asynccontextmanager
async def _serving(app: Starlette) -> AsyncIterator[str]:
    """The app under uvicorn on this loop, on a socket bound before the server starts (no port
    race); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # ws="none": the page needs no websockets, and importing them would only add warnings.
    config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task  # raises why it could not start
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def queue_url(settings: Settings) -> AsyncIterator[str]:
    async with _serving(create_app(settings)) as url:
        yield url


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Page]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 820, "height": 560})
            try:
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                yield page
                assert not errors, f"the page's script failed: {errors}"
            finally:
                await context.close()
        finally:
            await browser.close()


async def _join(queue_url: str, product_id: str) -> str:
    """Another visitor, joining through the API; returns its ticket."""
    async with httpx.AsyncClient(base_url=queue_url, trust_env=False) as client:
        response = await client.post(f"/queue/{product_id}/join")
    assert response.status_code == 201, response.text
    return response.json()["ticket"]


async def _page_visitor(page: Page, codec: TokenCodec, product_id: str) -> str:
    """The page's visitor id, from its (HttpOnly) ticket cookie."""
    cookies = await page.context.cookies()
    ticket = next(c["value"] for c in cookies if c["name"] == f"fs_ticket_{product_id}")
    return codec.read_ticket(ticket).visitor_id


async def test_the_page_follows_the_line_to_its_turn(
    browser_page: Page,
    queue_url: str,
    redis: Redis,
    tick: Tick,
    settings: Settings,
    tmp_path: Path,
) -> None:
    page = browser_page
    # A pre-queue first, so that the line is not empty when it opens: an open sale with room
    # lets a visitor who finds nobody in line straight through.
    keys = await new_sale(redis, opened=False, batch_size=1, abandon_s=ABANDON_S)
    p = keys.product_id
    for _ in range(2):
        await _join(queue_url, p)

    await page.goto(f"{queue_url}/wait/{p}")
    await expect(page.locator("#state")).to_have_text("The sale has not started yet")
    await expect(page.locator("#detail")).to_contain_text("You are number 3")
    await expect(page.locator("#leave")).to_be_visible()

    assert await open_sale(redis, p) == "done"
    await expect(page.locator("#state")).to_have_text("You are in line", timeout=STEP_TIMEOUT_MS)
    await expect(page.locator("#detail")).to_contain_text("Position 3 of 3")
    await page.screenshot(path=tmp_path / "1-in-line.png", animations="disabled")

    assert len(await tick(p)) == 1
    await expect(page.locator("#detail")).to_contain_text(
        "Position 2 of 2", timeout=STEP_TIMEOUT_MS
    )
    await page.screenshot(path=tmp_path / "2-moved.png", animations="disabled")

    await tick(p)
    assert await tick(p) == (await _page_visitor(page, TokenCodec(settings.secret_keys), p),)
    await expect(page.locator("#state")).to_have_text("It is your turn!", timeout=STEP_TIMEOUT_MS)
    shop = page.locator("#shop")
    await expect(shop).to_be_visible()
    await expect(shop).to_have_attribute("href", f"{settings.gate_url}/products/{p}")
    await expect(page.locator("#leave")).to_be_hidden()
    await expect(page.locator("#progress")).to_have_attribute("style", "width: 100%;")
    await page.screenshot(path=tmp_path / "3-your-turn.png", animations="disabled")


async def test_leaving_frees_the_place(
    browser_page: Page, queue_url: str, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    page = browser_page
    keys = await new_sale(redis, opened=False, abandon_s=ABANDON_S)
    p = keys.product_id
    await page.goto(f"{queue_url}/wait/{p}")
    await expect(page.locator("#detail")).to_contain_text("You are number 1")
    behind = await _join(queue_url, p)
    assert await open_sale(redis, p) == "done"
    await expect(page.locator("#detail")).to_contain_text(
        "Position 1 of 2", timeout=STEP_TIMEOUT_MS
    )
    visitor = await _page_visitor(page, TokenCodec(settings.secret_keys), p)

    await page.locator("#leave").click()
    await expect(page.locator("#state")).to_have_text("You left the line")
    await expect(page.locator("#rejoin")).to_be_visible()
    await expect(page.locator(".bar")).to_be_hidden()
    await expect(page.locator("#leave")).to_be_hidden()
    await page.screenshot(path=tmp_path / "left.png", animations="disabled")

    assert await redis.zscore(keys.line, visitor) is None
    assert await redis.zcard(keys.line) == 1
    async with httpx.AsyncClient(base_url=queue_url, trust_env=False) as client:
        moved = await client.get(
            f"/queue/{p}/status", headers={"Authorization": f"Bearer {behind}"}
        )
    assert moved.json()["position"] == 1
    assert not any(c["name"] == f"fs_ticket_{p}" for c in await page.context.cookies())

    # Changing one's mind: a new place, at the back.
    await page.locator("#rejoin").click()
    await expect(page.locator("#detail")).to_contain_text("Position 2 of 2")
    await expect(page.locator("#rejoin")).to_be_hidden()
    assert await _page_visitor(page, TokenCodec(settings.secret_keys), p) != visitor
