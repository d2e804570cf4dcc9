"""The shop page in headless Chromium, against the real platform: the gate and the shop under
uvicorn, the order worker (`python -m shop.worker`) that turns pending orders into placed ones,
the queue server for the waiting room, and the session's Valkey, PostgreSQL and tansu.

One Chromium, one platform for the whole module; each test has its own sale and visitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from infra.constants import ACCESS_COOKIE, HEADER_GATE_SECRET
from infra.settings import Settings
from queue_server.app import create_app as create_queue
from shop.app import create_app as create_shop
from tests.browser import DESKTOP, PHONE, chromium, new_page, require_browser, screenshot
from tests.orders.conftest import Worker, identity
from tests.shop.helpers import ADMIN
from tests.support import iso_in, sale_body, unique_id
from tests.token_gate.conftest import free_port, serving, serving_shop
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

require_browser()

from playwright.async_api import expect  # noqa: E402  (after the skip: it may be missing)

pytestmark = pytest.mark.slow


@dataclass
class Platform:
    settings: Settings
    gate_url: str
    queue_url: str
    shop: httpx.AsyncClient  # straight to the shop, as an operator (admin key, gate secret)
    codec: TokenCodec

    async def sale(self, **fields: Any) -> str:
        body = sale_body(**fields)
        reply = await self.shop.post("/admin/products", json=body, headers=ADMIN)
        assert reply.status_code == 201, reply.text
        return str(body["id"])

    def token(self, product_id: str, visitor: str, ttl_s: int = 900) -> str:
        # Longer than the default hold (600 s), so the countdown is the hold's.
        return self.codec.mint_access(visitor, product_id, int(time.time()) + ttl_s)

    def shop_url(self, product_id: str, token: str) -> str:
        return f"{self.gate_url}/shop/{product_id}?token={token}"

    async def stock_left(self, product_id: str) -> int:
        return int((await self.shop.get(f"/products/{product_id}")).json()["stock_left"])

    async def order(self, product_id: str, visitor: str, order_id: str) -> dict[str, Any]:
        headers = identity(self.settings, product_id, visitor)
        reply = await self.shop.get(f"/products/{product_id}/orders/{order_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


def record_order_keys(page: Any, keys: list[str]) -> None:
    """Appends the Idempotency-Key of every order the page places (POST …/orders)."""
    page.on(
        "request",
        lambda r: (
            keys.append(r.headers.get("idempotency-key", ""))
            if r.method == "POST" and r.url.endswith("/orders")
            else None
        ),
    )


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Settings:
    return stack_settings


@pytest.fixture(scope="module")
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    worker = Worker(settings)
    await worker.start()
    secret = {HEADER_GATE_SECRET: settings.gate_secrets()[0]}
    try:
        async with (
            serving(create_queue(settings)) as queue_url,
            serving_shop(settings) as shop_url,
            serving(
                create_gate(
                    settings.replace(shop_upstream_url=shop_url, public_queue_url=queue_url)
                )
            ) as gate_url,
            httpx.AsyncClient(base_url=shop_url, headers=secret) as shop,
        ):
            yield Platform(settings, gate_url, queue_url, shop, TokenCodec(settings.secret_keys))
    finally:
        await worker.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched


async def no_horizontal_overflow(page: Any) -> None:
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


async def tab_to(page: Any, element_id: str, most: int = 20) -> None:
    """Presses Tab until `element_id` has the focus: the keyboard alone gets there."""
    for _ in range(most):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement && document.activeElement.id") == (
            element_id
        ):
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")


async def wait_for_status(page: Any, status: str) -> None:
    # Placed only once the real worker has stored the order in PostgreSQL.
    await expect(page.locator("#order-status")).to_have_attribute(
        "data-status", status, timeout=30_000
    )


# --- entry -------------------------------------------------------------------------------------


async def test_without_a_token_the_page_lands_in_the_waiting_room(
    platform: Platform, browser: Any
) -> None:
    pid = await platform.sale()
    wait_url = f"{platform.queue_url}/wait/{pid}"
    now = int(time.time())
    visitor = unique_id("v")
    tokens = {
        "expired": platform.codec.mint_access(visitor, pid, now - 1),
        "ticket": platform.codec.mint_ticket(visitor, pid),
        "other product": platform.token("another-product", visitor),
    }
    # Contexts of their own, not new_page(): what the waiting room's page does once there is
    # the waiting room's business (tests/queue_server); this test is about getting there. One
    # context per case, because that page joins the line, and a line with room admits at once:
    # its fs_access cookie (same host, so the gate's too) would let the next case in.
    cases = {"no token": f"{platform.gate_url}/shop/{pid}"}
    cases.update({what: platform.shop_url(pid, token) for what, token in tokens.items()})
    for what, url in cases.items():
        context = await browser.new_context(locale="en-US")
        try:
            page = await context.new_page()
            reply = await page.goto(url, wait_until="commit")
            assert page.url == wait_url, what
            assert reply is not None and reply.status == 200, what  # a page, not a JSON 401
            assert "text/html" in reply.headers["content-type"], what
        finally:
            await context.close()


async def test_buy_decline_then_pay(platform: Platform, browser: Any, tmp_path: Path) -> None:
    pid = await platform.sale(name="Air Flash", price=12900, currency="EUR", per_user_limit=2)
    visitor = unique_id("v")
    token = platform.token(pid, visitor)
    async with new_page(browser, locale="en-US", viewport=DESKTOP) as page:
        await page.goto(platform.shop_url(pid, token))
        # The token left the address bar for an HttpOnly cookie.
        assert page.url == f"{platform.gate_url}/shop/{pid}"
        [jar] = [c for c in await page.context.cookies() if c["name"] == ACCESS_COOKIE]
        assert jar["value"] == token and jar["httpOnly"] and jar["sameSite"] == "Lax"

        await expect(page.locator("#name")).to_have_text("Air Flash")
        await expect(page.locator("#price")).to_have_text("€129.00")
        await expect(page.locator("#stock")).to_have_text("100 left of 100")
        await expect(page.locator("#limit")).to_have_text("At most 2 per person.")
        assert await page.locator("#quantity option").count() == 2
        await screenshot(page, "shop-product-en-desktop", tmp_path)

        await page.select_option("#quantity", "2")
        async with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith(f"/products/{pid}/orders")
        ) as answer:
            await page.click("#buy")
        accepted = await (await answer.value).json()
        assert (accepted["status"], accepted["quantity"]) == ("pending", 2)
        await wait_for_status(page, "placed")
        await expect(page.locator("#order-status")).to_have_text("Placed: awaiting payment")
        await expect(page.locator("#order-total")).to_have_text("€258.00")
        await expect(page.locator("#order-id")).to_have_text(accepted["order_id"])
        await expect(page.locator("#hold")).to_have_text(
            re.compile(r"^Pay within (10:00|9:[0-5]\d): the item is held for you until .+\.$")
        )
        await expect(page.locator("#stock")).to_have_text("98 left of 100")
        await expect(page.locator("#card-hint")).to_contain_text("4000 0000 0000 0002")
        await screenshot(page, "shop-placed-en-desktop", tmp_path)

        # The declining test card: said so, and the order stays payable.
        await page.fill("#card", "4000 0000 0000 0002")
        await page.click("#pay")
        await expect(page.locator("#notice")).to_contain_text("The card was declined")
        await expect(page.locator("#order-status")).to_have_attribute("data-status", "placed")
        await expect(page.locator("#pay")).to_be_enabled()
        await expect(page.locator("#cancel")).to_be_visible()

        await page.fill("#card", "4242424242424242")
        await page.press("#card", "Enter")
        await wait_for_status(page, "paid")
        await expect(page.locator("#order-status")).to_have_text("Paid: thank you!")
        await expect(page.locator("#notice")).to_have_text(
            f"Payment received. Your order number is {accepted['order_id']}."
        )
        await expect(page.locator("#pay-form")).to_be_hidden()
        await expect(page.locator("#hold")).to_be_hidden()
        await screenshot(page, "shop-paid-en-desktop", tmp_path)

        # A reload still shows the paid order (the tab remembers its order id).
        await page.reload()
        await wait_for_status(page, "paid")
    stored = await platform.order(pid, visitor, accepted["order_id"])
    assert (stored["status"], stored["quantity"], stored["total"]) == ("paid", 2, 25800)


async def test_cancel_gives_the_stock_back(platform: Platform, browser: Any) -> None:
    pid = await platform.sale(stock=5)
    visitor = unique_id("v")
    async with new_page(browser) as page:
        # Access for two minutes only: the hold (10) outlasts it, so paying is possible
        # while the access lasts, and that is the countdown shown.
        await page.goto(platform.shop_url(pid, platform.token(pid, visitor, ttl_s=120)))
        await expect(page.locator("#stock")).to_have_text("5 left of 5")
        await page.click("#buy")
        await wait_for_status(page, "placed")
        await expect(page.locator("#stock")).to_have_text("4 left of 5")
        assert await platform.stock_left(pid) == 4
        hold = page.locator("#hold")
        await expect(hold).to_have_text(
            re.compile(
                r"^Pay within (2:00|1:[0-5]\d), while your time to shop lasts \(until .+\)\.$"
            )
        )
        first = str(await hold.text_content())
        await expect(hold).not_to_have_text(first, timeout=3_000)  # the countdown moves

        order_id = await page.locator("#order-id").text_content()
        await page.click("#cancel")
        await wait_for_status(page, "cancelled")
        await expect(page.locator("#order-status")).to_have_text(
            "Cancelled: the item went back on sale."
        )
        await expect(page.locator("#stock")).to_have_text("5 left of 5")
        await expect(page.locator("#pay-form")).to_be_hidden()
        await expect(page.locator("#buy")).to_be_visible()  # free to buy again
    assert await platform.stock_left(pid) == 5
    assert (await platform.order(pid, visitor, str(order_id)))["status"] == "cancelled"


# --- languages, small screens, the keyboard -------------------------------------------------------


async def test_korean_browser_and_the_switch(
    platform: Platform, browser: Any, tmp_path: Path
) -> None:
    pid = await platform.sale(name="한정판 운동화", price=129000, currency="KRW", stock=30)
    async with new_page(browser, locale="ko-KR", viewport=DESKTOP) as page:
        await page.goto(platform.shop_url(pid, platform.token(pid, unique_id("v"))))
        await expect(page.locator("html")).to_have_attribute("lang", "ko")
        await expect(page.locator("#price")).to_have_text("₩129,000")
        await expect(page.locator("#stock")).to_have_text("30개 중 30개 남음")
        await expect(page.locator("#buy")).to_have_text("구매하기")
        await expect(page.locator("[data-lang-switch]")).to_have_text("English")
        await screenshot(page, "shop-product-ko-desktop", tmp_path)
        await page.set_viewport_size(PHONE)
        await no_horizontal_overflow(page)
        await screenshot(page, "shop-product-ko-phone", tmp_path)

        await page.click("#buy")
        await wait_for_status(page, "placed")
        await expect(page.locator("#order-status")).to_have_text("주문 완료: 결제를 기다리는 중")
        await expect(page.locator("#card-hint")).to_contain_text("항상 거절")
        await expect(page.locator("#pay")).to_have_text("₩129,000 결제하기")
        await no_horizontal_overflow(page)
        await screenshot(page, "shop-placed-ko-phone", tmp_path)
        await page.set_viewport_size(DESKTOP)
        await screenshot(page, "shop-placed-ko-desktop", tmp_path)

        await page.fill("#card", "5555 5555 5555 4444")
        await page.click("#pay")
        await wait_for_status(page, "paid")
        await expect(page.locator("#order-status")).to_have_text("결제 완료: 감사합니다!")
        await expect(page.locator("#notice")).to_contain_text("주문 번호는")
        await screenshot(page, "shop-paid-ko-desktop", tmp_path)
        await page.set_viewport_size(PHONE)
        await no_horizontal_overflow(page)
        await screenshot(page, "shop-paid-ko-phone", tmp_path)

        # The switch: everything in English at once, and remembered over a reload.
        await page.click("[data-lang-switch]")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.locator("#order-status")).to_have_text("Paid: thank you!")
        await expect(page.locator("#order-title")).to_have_text("Your order")
        await expect(page.locator("#price")).to_have_text("₩129,000")
        await expect(page.locator("[data-lang-switch]")).to_have_text("한국어")
        await page.reload()
        await expect(page.locator("#stock")).to_have_text("29 left of 30")


async def test_a_phone_and_the_keyboard_alone(
    platform: Platform, browser: Any, tmp_path: Path
) -> None:
    pid = await platform.sale(
        name="Air Flash Retro High OG Chicago, limited edition (numbered, 2026)", per_user_limit=3
    )
    async with new_page(browser, locale="en-US", viewport=PHONE) as page:
        await page.goto(platform.shop_url(pid, platform.token(pid, unique_id("v"))))
        await expect(page.locator("#stock")).to_have_text("100 left of 100")
        await no_horizontal_overflow(page)
        await screenshot(page, "shop-product-en-phone", tmp_path)

        await tab_to(page, "quantity")
        await page.keyboard.press("ArrowDown")  # 1 -> 2, without a mouse
        await tab_to(page, "buy")
        await page.keyboard.press("Enter")
        await wait_for_status(page, "placed")
        await expect(page.locator("#order-quantity")).to_have_text("2")
        await no_horizontal_overflow(page)
        await screenshot(page, "shop-placed-en-phone", tmp_path)

        await expect(page.locator("#card")).to_be_focused()  # the next step has the focus
        await page.keyboard.type("4242 4242 4242 424")  # one digit short: said so
        await page.keyboard.press("Enter")
        await expect(page.locator("#notice")).to_have_text(
            "Enter the 16 digits of the card number."
        )
        await expect(page.locator("#card")).to_be_focused()
        await page.keyboard.type("2")
        await tab_to(page, "pay")
        await page.keyboard.press("Enter")
        await wait_for_status(page, "paid")
        await no_horizontal_overflow(page)
        await screenshot(page, "shop-paid-en-phone", tmp_path)


# --- one click, one order ---------------------------------------------------------------------


async def test_a_double_click_is_one_order_and_each_click_its_own_key(
    platform: Platform, browser: Any
) -> None:
    pid = await platform.sale(stock=10, per_user_limit=3)
    keys: list[str] = []
    async with new_page(browser) as page:
        record_order_keys(page, keys)
        await page.goto(platform.shop_url(pid, platform.token(pid, unique_id("v"))))
        await expect(page.locator("#stock")).to_have_text("10 left of 10")
        await page.dblclick("#buy")
        await wait_for_status(page, "placed")
        await page.wait_for_timeout(300)  # a second order, had there been one, would be on its way
        assert keys and len(set(keys)) == 1 and re.fullmatch(r"[0-9a-f]{32}", keys[0]), keys
        assert await platform.stock_left(pid) == 9

        await page.click("#cancel")
        await wait_for_status(page, "cancelled")
        await page.click("#buy")  # a new click: a new key
        await wait_for_status(page, "placed")
        assert len(set(keys)) == 2, keys
        assert await platform.stock_left(pid) == 9


async def test_a_rate_limited_click_waits_and_is_sent_again_with_its_key(
    platform: Platform, browser: Any, settings: Settings
) -> None:
    pid = await platform.sale(stock=10)
    visitor = unique_id("v")
    token = platform.token(pid, visitor)
    keys: list[str] = []
    # A gate that allows this visitor one request every two seconds.
    slow = create_gate(
        settings.replace(
            shop_upstream_url=str(platform.shop.base_url).rstrip("/"),
            public_queue_url=platform.queue_url,
            visitor_rate=0.5,
        )
    )
    async with serving(slow) as gate_url, new_page(browser) as page:
        record_order_keys(page, keys)
        await page.goto(f"{gate_url}/shop/{pid}?token={token}")
        await expect(page.locator("#stock")).to_have_text("10 left of 10")
        async with httpx.AsyncClient() as client:  # spends the visitor's only token
            await client.get(
                f"{gate_url}/products/{pid}/orders/o_{'0' * 24}",
                headers={"Authorization": f"Bearer {token}"},
            )
        await page.click("#buy")
        notice = page.locator("#notice")
        await expect(notice).to_have_text(
            re.compile(r"^Too many requests at once\. Wait \d seconds?, then try again\.$")
        )
        await expect(page.locator("#buy")).to_be_disabled()
        await page.click("[data-lang-switch]")  # the message, the wait included, in Korean
        await expect(notice).to_have_text(
            re.compile(r"^요청이 너무 많습니다\. \d초 기다린 뒤 다시 시도해 주세요\.$")
        )
        await expect(page.locator("#buy")).to_be_enabled(timeout=5_000)  # after Retry-After
        await page.click("#buy")
        await wait_for_status(page, "pending")
        assert len(keys) == 2 and keys[0] == keys[1], keys  # the same click, sent again
    assert await platform.stock_left(pid) == 9


# --- every refusal says what happened ---------------------------------------------------------


async def test_sold_out_and_limit_reached_say_so(platform: Platform, browser: Any) -> None:
    pid = await platform.sale(stock=2, per_user_limit=1)
    visitor = unique_id("v")
    token = platform.token(pid, visitor)
    bearer = {"Authorization": f"Bearer {token}"}
    async with new_page(browser) as page, httpx.AsyncClient(base_url=platform.gate_url) as api:
        await page.goto(platform.shop_url(pid, token))
        await expect(page.locator("#stock")).to_have_text("2 left of 2")
        # The same visitor buys in another tab: this page's click is one too many.
        first = await api.post(f"/products/{pid}/orders", json={"quantity": 1}, headers=bearer)
        assert first.status_code == 202, first.text
        await page.click("#buy")
        await expect(page.locator("#notice")).to_have_text(
            "You have already bought your limit for this sale (1 per person)."
        )
        # Somebody else takes the last one.
        other = {"Authorization": f"Bearer {platform.token(pid, unique_id('v'))}"}
        last = await api.post(f"/products/{pid}/orders", json={"quantity": 1}, headers=other)
        assert last.status_code == 202, last.text

    async with new_page(browser, locale="ko-KR") as page:
        late = platform.token(pid, unique_id("v"))
        await page.goto(platform.shop_url(pid, late))
        await expect(page.locator("#sale-state")).to_have_text("품절되었습니다.")
        await expect(page.locator("#buy")).to_be_disabled()


async def test_a_sale_that_closes_while_the_page_is_open(platform: Platform, browser: Any) -> None:
    pid = await platform.sale(sale_end=iso_in(2.5))
    async with new_page(browser) as page:
        await page.goto(platform.shop_url(pid, platform.token(pid, unique_id("v"))))
        await expect(page.locator("#buy")).to_be_enabled()
        await page.wait_for_timeout(3_000)  # past sale_end; the page has not re-read the product
        await page.click("#buy")
        await expect(page.locator("#notice")).to_have_text(
            "The sale is closed: no more orders are taken."
        )


async def test_when_the_access_ends_the_page_says_so_and_leads_back(
    platform: Platform, browser: Any
) -> None:
    pid = await platform.sale()
    async with new_page(browser) as page:
        await page.goto(platform.shop_url(pid, platform.token(pid, unique_id("v"), ttl_s=5)))
        await expect(page.locator("#access")).to_contain_text("Your time to shop lasts until")
        await expect(page.locator("#notice")).to_have_text(
            "Your time to shop has run out. Join the line again in the waiting room.",
            timeout=10_000,
        )
        await expect(page.locator("#buy")).to_be_disabled()
        link = page.locator("#wait-link")
        await expect(link).to_be_visible()
        await expect(link).to_have_attribute("href", f"{platform.queue_url}/wait/{pid}")
        # The cookie dies with the token (Max-Age counts whole seconds, so within one): the API
        # sees none, or an expired one. The page says "your time ran out" for both.
        reply = await page.evaluate(
            f"fetch('/products/{pid}/orders', {{method: 'POST', headers: "
            "{'Content-Type': 'application/json'}, body: '{\"quantity\":1}'})"
            ".then(r => r.json())"
        )
        assert reply["error"] in ("token_missing", "token_expired"), reply


@contextlib.asynccontextmanager
async def shop_on(settings: Settings, port: int) -> AsyncIterator[None]:
    """The real shop on a port of our choosing, so that it can stop and come back there."""
    app = create_shop(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                raise RuntimeError(f"the shop did not start: {task.exception()!r}")
            await asyncio.sleep(0.01)
        await app.state.ctx.producer.wait_connected(30)
        yield
    finally:
        server.should_exit = True
        await task


async def test_a_shop_that_stops_answering_is_said_so_and_the_click_is_kept(
    platform: Platform, browser: Any, settings: Settings
) -> None:
    pid = await platform.sale(stock=10)
    port = free_port()
    keys: list[str] = []
    gate = create_gate(
        settings.replace(
            shop_upstream_url=f"http://127.0.0.1:{port}", public_queue_url=platform.queue_url
        )
    )
    async with serving(gate) as gate_url, new_page(browser) as page:
        record_order_keys(page, keys)
        # No shop behind the gate: the page says so, and tries again by itself.
        await page.goto(f"{gate_url}/shop/{pid}?token={platform.token(pid, unique_id('v'))}")
        notice = page.locator("#notice")
        await expect(notice).to_contain_text("The shop is not answering right now. Try again in")
        await expect(page.locator("#buy")).to_be_disabled()
        async with shop_on(settings, port):
            await expect(page.locator("#stock")).to_have_text("10 left of 10", timeout=10_000)
            await expect(notice).to_be_empty()  # the message went with the trouble
        # The shop is gone again when Buy is clicked: the click is kept, with its key.
        await page.click("#buy")
        await expect(notice).to_contain_text("The shop is not answering right now.")
        async with shop_on(settings, port):
            await expect(page.locator("#buy")).to_be_enabled(timeout=10_000)
            await page.click("#buy")
            await wait_for_status(page, "placed")
        assert len(keys) == 2 and keys[0] == keys[1], keys
    assert await platform.stock_left(pid) == 9
