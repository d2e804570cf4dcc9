"""The newcomer's drop, in a real browser against `flashsale up`: a visitor opens the waiting
room before the start, waits through the pre-queue and the draw, is carried to the shop page
on its turn, buys, pays and sees "paid" (issue 8's first scenario). Every process is real:
the scheduler admits, the gate checks the token, the order goes through Kafka into
PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.constants import DEV_ADMIN_KEY
from tests.browser import PHONE, chromium, new_page, require_browser, screenshot
from tests.infra.stack.test_up import _eventually, flashsale_up

require_browser()
from playwright.async_api import expect  # noqa: E402  (after the browser check)

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
OPENS_IN_S = 8
STEP_MS = 30_000  # a step that waits on the scheduler, the worker or Kafka


def _sale(product_id: str) -> dict[str, Any]:
    return {
        "id": product_id,
        "name": "브라우저 스니커 / Browser sneaker",
        "price": 129000,
        "currency": "KRW",
        "stock": 5,
        "sale_start": (datetime.now(UTC) + timedelta(seconds=OPENS_IN_S)).isoformat(),
        "queue_mode": "shuffle_prequeue",
        "batch_size": 2,
        "interval_s": 0.5,
        "per_user_limit": 2,
        "abandon_s": 30,  # polls come at least every 10 s, so every step shows soon
    }


@pytest.mark.parametrize(("locale", "lang"), [("ko-KR", "ko"), ("en-US", "en")])
async def test_a_newcomer_waits_reaches_the_shop_buys_and_pays(
    tmp_path: Path, embedded_data_dir: Path, locale: str, lang: str
) -> None:
    product_id = f"browser-drop-{lang}"
    async with flashsale_up(tmp_path, embedded_data_dir) as up:
        queue, gate, shop = up.url("queue"), up.url("gate"), up.url("shop")
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            created = await http.post(
                f"{shop}/admin/products", headers=ADMIN, json=_sale(product_id)
            )
            assert created.status_code == 201, created.text

            async with (
                chromium() as browser,
                new_page(browser, locale=locale, viewport=PHONE) as page,
            ):
                await page.goto(f"{queue}/wait/{product_id}")
                await expect(page.locator("html")).to_have_attribute("lang", lang)
                await expect(page.locator("#countdown-box")).to_be_visible()
                await screenshot(page, f"drop-1-prequeue-{lang}", tmp_path)

                # The start, the draw, the admission, the "your turn" moment: then the page
                # carries the visitor to the shop on the gate by itself.
                await page.wait_for_url(
                    re.compile(rf"^{re.escape(gate)}/shop/{product_id}$"), timeout=STEP_MS
                )
                await expect(page.locator("html")).to_have_attribute("lang", lang)
                await expect(page.locator("#name")).to_have_text(_sale(product_id)["name"])
                await expect(page.locator("#price")).to_contain_text("129,000")
                await screenshot(page, f"drop-2-shop-{lang}", tmp_path)

                await page.locator("#quantity").select_option("2")
                await page.locator("#buy").click()
                status = page.locator("#order-status")
                await expect(status).to_have_attribute("data-status", "placed", timeout=STEP_MS)
                await page.locator("#card").fill("4242424242424242")
                await page.locator("#pay").click()
                await expect(status).to_have_attribute("data-status", "paid", timeout=STEP_MS)
                order_id = (await page.locator("#order-id").text_content() or "").strip()
                assert order_id
                await screenshot(page, f"drop-3-paid-{lang}", tmp_path)

            # What the operator sees agrees with what the visitor saw.
            async def paid() -> bool:
                stats = await http.get(f"{shop}/admin/sales/{product_id}/stats", headers=ADMIN)
                body = stats.json()
                return body["orders"]["paid"] == 1 and body["stock_left"] == 3

            await _eventually(paid, timeout_s=30)
