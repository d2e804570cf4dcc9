"""The dashboard with the read-only viewer key, in real Chromium against the real shop: every
figure still shows, the controls that would change a sale are not there, and the page sends
nothing but GETs. With the admin key the controls are there and no read-only badge."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import DEV_VIEWER_KEY
from tests.browser import require_browser

require_browser()
from playwright.async_api import Page, Request, expect  # noqa: E402  (after the skip)

from tests.shop.test_dashboard import (  # noqa: E402  (the same module fixtures)
    ADMIN_KEY,
    STEP_MS,
    _cell,
    _sale_with_line,
    _show,
    _sign_in,
    api,
    browser,
    dash_settings,
    page,
    shop_url,
)

pytestmark = pytest.mark.slow
FIXTURES = (api, browser, dash_settings, page, shop_url)  # used by name, by pytest
WRITE_CONTROLS = ("#pause", "#edit-form", "#create-form")


async def test_the_viewer_sees_every_figure_and_no_control(
    page: Page, shop_url: str, api: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await _sale_with_line(redis, 4, stock=30)
    pid = keys.product_id
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if "/admin/" in r.url else None)

    await _sign_in(page, shop_url, key=DEV_VIEWER_KEY)
    await expect(page.locator("#board")).to_be_visible()
    await expect(page.locator("#role")).to_be_visible()
    await expect(page.locator("#role")).to_have_text("Read only (viewer key)")
    await page.locator("#filter").fill(pid)
    await expect(_cell(page, pid, "waiting")).to_have_attribute("data-value", "4", timeout=STEP_MS)
    stats = (await api.get(f"/admin/sales/{pid}/stats")).json()
    await expect(_cell(page, pid, "stock_left")).to_have_text(
        f"{stats['stock_left']} / {stats['stock_total']}"
    )
    await expect(page.locator("#dlq")).to_contain_text("Dead letters:")
    await _show(page, pid)  # the detail and its charts are reading too
    for control in WRITE_CONTROLS:
        await expect(page.locator(control)).to_be_hidden()
    await page.wait_for_timeout(1500)  # a few samples more
    methods = {r.method for r in sent if "/admin/static/" not in r.url}
    assert methods == {"GET"}, [(r.method, r.url) for r in sent]

    # Forgetting the key and signing in as the admin brings the controls back.
    await page.get_by_role("button", name="Forget the key").click()
    await _sign_in(page, shop_url, key=ADMIN_KEY)
    await expect(page.locator("#board")).to_be_visible()
    await expect(page.locator("#role")).to_be_hidden()
    await _show(page, pid)
    for control in WRITE_CONTROLS:
        await expect(page.locator(control)).to_be_visible()
