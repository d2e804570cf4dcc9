"""The operator dashboard in real Chromium, against the real shop under uvicorn on the session's
Valkey, PostgreSQL and broker. Visitors join through the queue's own scripts and are admitted by
the scheduler's own ticks, so what the page shows is what the platform did.

One Chromium and one shop for the module; each test has its own page (fresh sessionStorage) and
its own sales.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from redis.asyncio import Redis

from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from scheduler.admission import Admissions
from tests.browser import PHONE, chromium, new_page, require_browser, screenshot
from tests.orders.conftest import identity
from tests.support import new_sale, open_sale, sale_body, serving_shop, unique_id
from token_gate.codec import TokenCodec

require_browser()
from playwright.async_api import Page, Request, expect  # noqa: E402  (after the skip)

pytestmark = pytest.mark.slow

# A key of this module's own, so that "the key is in no URL" looks for something distinctive.
ADMIN_KEY = "dash-" + secrets.token_hex(16)
KEY_STORE = "fs_admin_key"
STEP_MS = 10_000  # the page samples every second and lists every five


@pytest.fixture(scope="module")
def dash_settings(stack_settings: Settings) -> Settings:
    return stack_settings.replace(admin_key=ADMIN_KEY)


@pytest.fixture(scope="module")
async def shop_url(dash_settings: Settings) -> AsyncIterator[str]:
    async with serving_shop(dash_settings) as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    async with new_page(browser) as p:
        yield p


@pytest.fixture
async def api(shop_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The admin API as an operator's script calls it, to check the page against."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=shop_url, headers=headers, trust_env=False) as client:
        yield client


@pytest.fixture
def admissions(redis: Redis, dash_settings: Settings) -> Admissions:
    codec = TokenCodec(dash_settings.secret_keys)
    return Admissions(redis, SaleScripts(redis), codec, Metrics("test_dashboard"))


async def _sale_with_line(redis: Redis, visitors: int, **overrides: Any) -> SaleKeys:
    """An open sale whose line holds `visitors`, who joined in its pre-queue (joining an open
    sale's empty line would let the first straight through)."""
    keys = await new_sale(redis, opened=False, **overrides)
    scripts = SaleScripts(redis)
    for _ in range(visitors):
        await scripts.join(keys, secrets.token_hex(16), False, "203.0.113.9", 0)
    assert await open_sale(redis, keys.product_id) == "done"
    return keys


async def _sign_in(page: Page, shop_url: str, key: str = ADMIN_KEY) -> None:
    await page.goto(f"{shop_url}/admin/dashboard")
    await expect(page.locator("#key-input")).to_be_focused()
    await page.locator("#key-input").fill(key)
    await page.get_by_role("button", name="Open the dashboard").click()


async def _show(page: Page, product_id: str) -> None:
    await page.locator("#filter").fill(product_id)
    row = page.locator(f'tr[data-product-id="{product_id}"]')
    await row.get_by_role("button", name=f"Show {product_id}").click()
    await expect(page.locator("#detail-h")).to_contain_text(product_id)


def _cell(page: Page, product_id: str, field: str) -> Any:
    return page.locator(f'tr[data-product-id="{product_id}"] [data-field="{field}"]')


async def test_it_asks_for_the_key_and_refuses_a_wrong_one(page: Page, shop_url: str) -> None:
    await _sign_in(page, shop_url, key="not-the-key")
    message = page.locator("#key-message")
    await expect(message).to_contain_text("refused this key (401 unauthorized)")
    await expect(message).to_contain_text("Enter the admin key again")
    await expect(page.locator("#board")).to_be_hidden()
    await expect(page.locator("#key-input")).to_be_focused()
    await expect(page.locator("#key-input")).to_have_value("")
    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") is None

    await page.locator("#key-input").fill(ADMIN_KEY)
    await page.get_by_role("button", name="Open the dashboard").click()
    await expect(page.locator("#board")).to_be_visible()
    await expect(page.locator("#key-message")).to_be_hidden()
    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") == ADMIN_KEY

    # A key that stops working (rotated, or a stale tab) sends the operator back to the form.
    await page.evaluate(f"sessionStorage.setItem('{KEY_STORE}', 'rotated-away')")
    await page.reload()
    await expect(page.locator("#key-message")).to_contain_text("refused this key")
    await expect(page.locator("#board")).to_be_hidden()
    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") is None


async def test_its_numbers_agree_with_the_stats(
    page: Page,
    shop_url: str,
    api: httpx.AsyncClient,
    redis: Redis,
    admissions: Admissions,
    dash_settings: Settings,
) -> None:
    keys = await _sale_with_line(redis, 7, batch_size=2, stock=40)
    pid = keys.product_id
    admitted = (await admissions.tick(pid, 1, interval_ms=0)).admitted
    assert len(admitted) == 2
    # One of them buys: an order pending on its way through the broker, one unit less stock.
    async with httpx.AsyncClient(base_url=shop_url, trust_env=False) as gate:
        order = await gate.post(
            f"/products/{pid}/orders",
            json={"quantity": 1},
            headers=identity(dash_settings, pid, admitted[0]),
        )
    assert order.status_code == 202, order.text

    await _sign_in(page, shop_url)
    await page.locator("#filter").fill(pid)
    await expect(_cell(page, pid, "waiting")).to_have_attribute("data-value", "5", timeout=STEP_MS)
    stats = (await api.get(f"/admin/sales/{pid}/stats")).json()
    # The buyer's token is used: one active admission left of the two.
    assert stats["waiting"] == 5 and stats["active"] == 1 and stats["orders"]["pending"] == 1
    assert stats["stock_left"] == 39 and stats["admit_rate_per_s"] > 0

    figures = {
        "waiting": stats["waiting"],
        "active": stats["active"],
        "tokens_issued": stats["tokens_issued"],
        "admit_rate_per_s": stats["admit_rate_per_s"],
        "stock_left": stats["stock_left"],
        **{f"orders.{k}": v for k, v in stats["orders"].items()},
    }
    for field, value in figures.items():
        cell = _cell(page, pid, field)
        assert float(await cell.get_attribute("data-value") or "nan") == value, field
        shown = (await cell.inner_text()).split(" / ")[0].replace(",", "")
        assert float(shown) == pytest.approx(value, abs=0.05), field
    await expect(_cell(page, pid, "stock_left")).to_have_text("39 / 40")
    await expect(_cell(page, pid, "state")).to_have_text("open")

    dead = (await api.get("/admin/dlq")).json()
    await expect(page.locator("#dlq")).to_have_attribute("data-value", str(len(dead)))
    await expect(page.locator("#dlq")).to_have_text(f"Dead letters: {len(dead)}")

    # And it follows the line: two more admitted, the page shows the new figures.
    await admissions.tick(pid, 2, interval_ms=0)
    await expect(_cell(page, pid, "waiting")).to_have_attribute("data-value", "3", timeout=STEP_MS)
    await expect(_cell(page, pid, "tokens_issued")).to_have_attribute("data-value", "4")


async def test_pause_pauses_and_resume_resumes(
    page: Page, shop_url: str, api: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await _sale_with_line(redis, 3)
    pid = keys.product_id
    await _sign_in(page, shop_url)
    await _show(page, pid)
    button = page.locator("#pause")
    await expect(button).to_have_text("Pause admissions")

    await button.click()
    await expect(button).to_have_text("Resume admissions")
    await expect(page.locator("#pause-message")).to_contain_text("Paused")
    assert (await api.get(f"/admin/products/{pid}")).json()["state"] == "paused"
    assert (await SaleScripts(redis).info(keys))["state"] == "paused"
    await expect(_cell(page, pid, "state")).to_have_text("paused")

    await button.click()
    await expect(button).to_have_text("Pause admissions")
    assert (await api.get(f"/admin/products/{pid}")).json()["state"] == "open"
    await expect(_cell(page, pid, "state")).to_have_text("open")


async def test_the_form_creates_a_sale_and_shows_a_refusal(
    page: Page, shop_url: str, api: httpx.AsyncClient
) -> None:
    await _sign_in(page, shop_url)
    form = page.locator("#create-form")

    async def fill(**fields: str) -> None:
        for field, value in fields.items():
            target = form.locator(f'[data-field="{field}"]')
            if field == "queue_mode":
                await target.select_option(value)
            else:
                await target.fill(value)

    bad = unique_id("dash-bad")
    await fill(id=bad, name="Refused", price="1000", currency="KRW", stock="-1")
    await form.get_by_role("button", name="Create the sale").click()
    refusal = await api.post(
        "/admin/products", json=sale_body(id=bad, stock=-1, currency="KRW", price=1000)
    )
    assert refusal.status_code == 422
    await expect(page.locator("#create-message")).to_have_text(
        f"invalid_request: {refusal.json()['detail']}"
    )
    assert (await api.get(f"/admin/products/{bad}")).status_code == 404

    pid = unique_id("dash-new")
    await fill(id=pid, name="Dashboard sneaker", stock="25", queue_mode="fifo")
    await form.locator("summary").click()
    await fill(batch_size="5", interval_s="0.5", per_user_limit="2")
    await form.get_by_role("button", name="Create the sale").click()
    # The form's start is a minute away, inside the default pre-queue of 900 s.
    await expect(page.locator("#create-message")).to_have_text(f"Created {pid} (prequeue).")
    await expect(page.locator(f'tr[data-product-id="{pid}"]')).to_be_visible()
    await expect(page.locator("#detail-h")).to_contain_text(pid)
    sale = (await api.get(f"/admin/products/{pid}")).json()
    assert sale["name"] == "Dashboard sneaker" and sale["stock_total"] == 25
    assert (sale["price"], sale["currency"], sale["queue_mode"]) == (1000, "KRW", "fifo")
    assert (sale["batch_size"], sale["interval_s"], sale["per_user_limit"]) == (5, 0.5, 2)
    assert sale["prequeue_s"] == 900  # left empty: API.md's default


async def test_editing_the_pace_patches_the_sale(
    page: Page, shop_url: str, api: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await _sale_with_line(redis, 2, batch_size=10)
    pid = keys.product_id
    await _sign_in(page, shop_url)
    await _show(page, pid)
    await expect(page.locator("#edit-batch_size")).to_have_value("10")

    await page.locator("#edit-batch_size").fill("7")
    await page.locator("#edit-interval_s").fill("0.5")
    await page.locator("#edit-max_active").fill("30")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#edit-message")).to_have_text(
        "Saved: batch_size 7, interval_s 0.5, max_active 30."
    )
    sale = (await api.get(f"/admin/products/{pid}")).json()
    assert (sale["batch_size"], sale["interval_s"], sale["max_active"]) == (7, 0.5, 30)
    assert sale["state"] == "open"

    await page.locator("#edit-batch_size").fill("0")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#edit-message")).to_have_text(
        "invalid_request: batch_size must be an integer from 1 to 100000"
    )
    assert (await api.get(f"/admin/products/{pid}")).json()["batch_size"] == 7


async def test_the_key_goes_only_as_a_bearer_header(
    page: Page, shop_url: str, redis: Redis
) -> None:
    keys = await _sale_with_line(redis, 2)
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    await _sign_in(page, shop_url)
    await _show(page, keys.product_id)
    await page.locator("#pause").click()
    await expect(page.locator("#pause")).to_have_text("Resume admissions")
    await page.locator("#pause").click()
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#edit-message")).to_contain_text("Saved")
    await page.wait_for_timeout(2500)  # a few samples more

    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") == ADMIN_KEY
    assert await page.evaluate("JSON.stringify(localStorage)") == "{}"
    assert ADMIN_KEY not in await page.evaluate("document.cookie")
    data_paths = ("/admin/products", "/admin/sales/", "/admin/dlq", "/admin/role")
    seen: set[str] = set()
    for request in requests:
        assert ADMIN_KEY not in unquote(request.url), request.url
        assert request.url.startswith(shop_url), request.url
        path = request.url[len(shop_url) :]
        headers = await request.all_headers()
        if path.startswith(data_paths):
            assert headers.get("authorization") == f"Bearer {ADMIN_KEY}", path
            seen.add(f"{request.method} {path.split('?')[0]}")
        else:
            assert "authorization" not in headers, path  # the page and files need no key
    pid = keys.product_id
    expected = {
        "GET /admin/products",
        "GET /admin/dlq",
        "GET /admin/role",
        f"GET /admin/sales/{pid}/stats",
        f"POST /admin/sales/{pid}/pause",
        f"POST /admin/sales/{pid}/resume",
        f"PATCH /admin/products/{pid}",
    }
    assert expected <= seen, expected - seen


# The strokes of the three series (dashboard.js), as the canvas holds them.
STROKES = {
    "chart-line": (0x00, 0x56, 0xB3),
    "chart-admissions": (0x14, 0x6C, 0x2E),
    "chart-orders": (0x8A, 0x4B, 0x00),
}
COUNT_STROKE = """([el, r, g, b]) => {
  const canvas = el.querySelector("canvas");
  const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (Math.abs(px[i] - r) < 8 && Math.abs(px[i + 1] - g) < 8 && Math.abs(px[i + 2] - b) < 8
        && px[i + 3] > 200) n++;
  }
  return n;
}"""


async def _live(
    keys: SaleKeys, admissions: Admissions, settings: Settings, shop_url: str, every_s: float
) -> None:
    """A live sale until cancelled: people keep joining, the scheduler admits a batch every
    `every_s`, and two of each batch buy."""
    pid = keys.product_id
    async with httpx.AsyncClient(base_url=shop_url, trust_env=False) as gate:
        for n in itertools.count(1):
            for _ in range(2):
                await admissions.scripts.join(keys, secrets.token_hex(16), False, "203.0.113.9", 0)
            for visitor in (await admissions.tick(pid, n, interval_ms=0)).admitted[:2]:
                placed = await gate.post(
                    f"/products/{pid}/orders",
                    json={"quantity": 1},
                    headers=identity(settings, pid, visitor),
                )
                assert placed.status_code == 202, placed.text
            await asyncio.sleep(every_s)


async def test_the_charts_fill_with_samples(
    page: Page,
    shop_url: str,
    api: httpx.AsyncClient,
    redis: Redis,
    admissions: Admissions,
    dash_settings: Settings,
    tmp_path: Path,
) -> None:
    keys = await _sale_with_line(redis, 40, batch_size=3, stock=200, name="Live sneaker")
    pid = keys.product_id
    await _sign_in(page, shop_url)
    await _show(page, pid)
    # Ticks twice as often as the page samples, so every sample sees admissions and orders.
    live = asyncio.create_task(_live(keys, admissions, dash_settings, shop_url, every_s=0.5))
    try:
        for chart in STROKES:
            for _ in range(100):
                if int(await page.locator(f"#{chart}").get_attribute("data-points") or 0) >= 4:
                    break
                await page.wait_for_timeout(100)
        for chart, rgb in STROKES.items():
            el = page.locator(f"#{chart}")
            await expect(el.locator("canvas")).to_have_count(1)
            points = int(await el.get_attribute("data-points") or "0")
            assert points >= 4, (chart, points)
            drawn = await page.evaluate(COUNT_STROKE, [await el.element_handle(), *rgb])
            assert drawn > 20, f"{chart}: the series was not drawn ({drawn} pixels)"
        for chart in ("chart-admissions", "chart-orders"):
            now = _caption(page, chart)
            await expect(now).not_to_have_text(re.compile(r"^(—|0)$"))
            assert float(await now.inner_text()) > 0, chart
        await screenshot(page, "dashboard-desktop", tmp_path)
    finally:
        live.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live
    # Once the line stands still, the line chart's latest value is the stats' line.
    stats = (await api.get(f"/admin/sales/{pid}/stats")).json()
    await expect(_caption(page, "chart-line")).to_have_text(str(stats["waiting"]), timeout=STEP_MS)
    await expect(_caption(page, "chart-admissions")).to_have_text("0", timeout=STEP_MS)


def _caption(page: Page, chart: str) -> Any:
    """The latest value under a chart."""
    return page.locator(f"#{chart}").locator("xpath=..").locator("[data-field=now]")


async def test_it_holds_at_phone_width(
    browser: Any, shop_url: str, redis: Redis, tmp_path: Path
) -> None:
    keys = await _sale_with_line(redis, 5)
    async with new_page(browser, viewport=PHONE) as page:
        await _sign_in(page, shop_url)
        await _show(page, keys.product_id)
        await expect(page.locator("#chart-line canvas")).to_have_count(1)
        # Only the table scrolls sideways (in its own box); the page itself does not.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        for chart in STROKES:
            box = await page.locator(f"#{chart}").bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], chart
        await screenshot(page, "dashboard-phone", tmp_path)
