"""The waiting-room page in real Chromium against the real queue server and Valkey: its two
languages, the pre-queue's countdown and draw ("check my draw"), every way a wait can end,
and the keyboard and screen-reader paths.

The endings are brought about in Valkey as the platform itself would leave it (stock gone, a
pause, a cancellation, a token past its expiry, a place quiet for too long), then the page
must find out by its own polling and say what happened and what to do next.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from infra.sale.scripts import SaleScripts
from infra.sale.shuffle import draw
from infra.settings import Settings
from shop.sales import apply
from tests.browser import PHONE, new_page, require_browser
from tests.queue_server.test_last_seen import last_asked
from tests.queue_server.waiting_room import (
    ABANDON_S,
    STEP_TIMEOUT_MS,
    a_line_ahead,
    assert_aa_contrast,
    assert_fits_a_phone,
    every_look,
    now_ms,
    page_visitor,
)
from tests.support import iso_in, new_sale, open_sale
from token_gate.codec import TokenCodec

require_browser()
from playwright.async_api import Route, expect  # noqa: E402

pytestmark = pytest.mark.slow

Tick = Callable[[str], Awaitable[tuple[str, ...]]]
HANGUL = re.compile("[\uac00-\ud7a3]")
STATUS = re.compile(r"/queue/[a-z0-9-]+/(join|status)$")


async def _main_text(page: Any) -> str:
    return await page.locator("main").inner_text()


async def test_a_korean_browser_sees_korean_and_the_switch_is_remembered(
    browser: Any, queue_url: str, redis: Redis, tmp_path: Path
) -> None:
    keys = await new_sale(
        redis, opened=False, queue_mode="shuffle_prequeue", sale_start=iso_in(600)
    )
    url = f"{queue_url}/wait/{keys.product_id}"
    async with new_page(browser, locale="ko-KR") as page:
        await page.goto(url)
        await expect(page.locator("html")).to_have_attribute("lang", "ko")
        await expect(page.locator("#headline")).to_have_text("아직 판매 시작 전입니다")
        # Intl in Korean: "오전/오후 h:mm" inside a Korean sentence, minutes as "분".
        await expect(page.locator("#eta")).to_have_text(
            re.compile(r"^판매는 (오전|오후) \d{1,2}:\d\d에 시작합니다\. (9|10)분 남았습니다\.$")
        )
        await expect(page.locator("#countdown")).to_have_text(re.compile(r"^(9:5\d|10:00)$"))
        await expect(page.locator("#fair-title")).to_have_text("순서 추첨 방식")
        await expect(page.locator("#lang")).to_have_text("English")
        assert await page.title() == "Test sneaker 대기실"
        await every_look(page, "prequeue", tmp_path)

        await page.locator("#lang").click()
        await expect(page.locator("#headline")).to_have_text("The sale has not started yet")
        await expect(page.locator("#eta")).to_contain_text(re.compile(r"\d:\d\d (AM|PM), in"))
        assert not HANGUL.search(await _main_text(page))
        await page.reload()  # the choice outlives the page, over the browser's language
        await expect(page.locator("#headline")).to_have_text("The sale has not started yet")
        await expect(page.locator("#lang")).to_have_text("한국어")
        await page.locator("#lang").click()
        await expect(page.locator("#headline")).to_have_text("아직 판매 시작 전입니다")

    async with new_page(browser, locale="en-US") as page:
        await page.goto(url)
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.locator("#headline")).to_have_text("The sale has not started yet")
        await expect(page.locator("#eta")).to_have_text(
            re.compile(r"^The sale starts at \d{1,2}:\d\d (AM|PM), in (9|10) minutes\.$")
        )
        assert not HANGUL.search(await _main_text(page))


async def test_the_countdown_and_the_draw_can_be_checked(
    browser: Any, queue_url: str, redis: Redis, settings: Settings
) -> None:
    keys = await new_sale(
        redis, opened=False, queue_mode="shuffle_prequeue", sale_start=iso_in(30),
        abandon_s=ABANDON_S,
    )  # fmt: skip
    p = keys.product_id
    commitment = await redis.hget(keys.sale, "commitment")
    async with new_page(browser) as page:
        await page.goto(f"{queue_url}/wait/{p}")
        countdown = page.locator("#countdown")
        await expect(countdown).to_have_text(re.compile(r"^0:(2\d|30)$"))
        first = await countdown.inner_text()
        await expect(countdown).not_to_have_text(first)  # it counts down by itself
        await expect(page.locator("#detail")).to_contain_text("a random place")
        await expect(page.locator("#fair-how")).to_contain_text("fingerprint (SHA-256)")
        await expect(page.locator("#commitment")).to_have_text(commitment)
        await expect(page.locator("#seed-row")).to_be_hidden()
        await expect(page.locator("#check")).to_be_hidden()

        # The start: the clock reaches it, the scheduler draws (here, by hand).
        await redis.hset(keys.sale, "start_ms", now_ms() - 1000)
        assert await open_sale(redis, p) == "done"
        seed = await redis.hget(keys.sale, "seed")
        await expect(page.locator("#headline")).to_have_text(
            "You are in line", timeout=STEP_TIMEOUT_MS
        )
        await expect(page.locator("#countdown-box")).to_be_hidden()
        await expect(page.locator("#seed")).to_have_text(seed, timeout=STEP_TIMEOUT_MS)
        visitor = await page_visitor(page, TokenCodec(settings.secret_keys), p)
        await expect(page.locator("#draw")).to_have_text(draw(seed, visitor))
        await expect(page.locator("#fair-how")).to_contain_text("smallest first")
        await page.locator("#check").focus()
        await page.keyboard.press("Space")
        await expect(page.locator("#check-result")).to_have_text(
            re.compile("^✓ Checked in your browser")
        )

        # A draw that is not the seed's: the check says so (it checks, it does not agree).
        async def forged(route: Route) -> None:
            response = await route.fetch()
            body = await response.json()
            body["draw"] = "0" * 64
            await route.fulfill(response=response, json=body)

        await page.route(STATUS, forged)
        await page.reload()
        await page.locator("#check").click()
        await expect(page.locator("#check-result")).to_have_text(
            re.compile("^✗ Your draw does NOT match")
        )
        await page.unroute(STATUS)

        # Without WebCrypto (plain http to a public host), the page gives the formula.
        await page.add_init_script(
            "Object.defineProperty(Crypto.prototype, 'subtle', { get: () => undefined })"
        )
        await page.reload()
        await page.locator("#check").click()
        await expect(page.locator("#check-result pre")).to_have_text(
            f"printf '%s' '{visitor}' | openssl dgst -sha256 -mac HMAC -macopt hexkey:{seed}"
        )

    async with new_page(browser) as page:
        await page.goto(f"{queue_url}/wait/{p}")
        await expect(page.locator("#late")).to_be_visible()  # this one came after the start
        await expect(page.locator("#check")).to_be_hidden()  # it has no draw to check


async def _expire(redis: Redis, keys: Any, visitor: str, codec: TokenCodec, tick: Tick) -> None:
    """The visitor was admitted and its token's lifetime went by unused; then the next tick
    swept it (and, with a batch of 0, admitted nobody: the filler stays first in line)."""
    expiry = now_ms() - 1000
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.line, visitor)
        pipe.zadd(keys.admitted, {visitor: expiry})
        pipe.hset(keys.tokens, visitor, codec.mint_access(visitor, keys.product_id, expiry // 1000))
        pipe.hset(keys.sale, "batch_size", 0)
        await pipe.execute()
    assert await tick(keys.product_id) == ()


ENDINGS = {
    # state: (headline, what happened / what to do next, the way out offered)
    "sold-out": ("Sold out", "keep this page open to keep your place", "#leave"),
    "paused": ("Admissions are paused", "You keep your place", "#leave"),
    "closed": ("The sale is closed", "There is nothing more to wait for", None),
    "expired": ("Your turn has passed", "You can join the line again, at the back", "#rejoin"),
    "place-lost": ("You lost your place", "You can join again, at the back", "#rejoin"),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_each_ending_says_what_happened_and_what_next(
    browser: Any,
    queue_url: str,
    redis: Redis,
    settings: Settings,
    tick: Tick,
    tmp_path: Path,
    ending: str,
) -> None:
    keys = await new_sale(redis, abandon_s=ABANDON_S)
    p = keys.product_id
    await a_line_ahead(redis, keys)
    codec = TokenCodec(settings.secret_keys)
    async with new_page(browser) as page:
        await page.goto(f"{queue_url}/wait/{p}")
        await expect(page.locator("#position")).to_contain_text("You are number 2 of 2.")
        visitor = await page_visitor(page, codec, p)
        if ending == "sold-out":
            await redis.set(keys.stock, 0)
        elif ending == "paused":
            await apply(SaleScripts(redis), keys, {"paused": "1"})
        elif ending == "closed":
            await redis.hset(keys.sale, "cancelled", "1")
        elif ending == "expired":
            await _expire(redis, keys, visitor, codec, tick)
        else:
            await last_asked(redis, keys, visitor, 400)
        headline, detail, way_out = ENDINGS[ending]
        await expect(page.locator("#headline")).to_have_text(headline, timeout=STEP_TIMEOUT_MS)
        await expect(page.locator("#detail")).to_contain_text(detail)
        for button in ("#leave", "#rejoin", "#shop"):
            await expect(page.locator(button)).to_be_visible(visible=button == way_out)
        await every_look(page, ending, tmp_path)

        if ending == "paused":
            await expect(page.locator("#position")).to_contain_text("You are number 2 of 2.")
            await apply(SaleScripts(redis), keys, {"paused": "0"})
            await expect(page.locator("#headline")).to_have_text(
                "You are in line", timeout=STEP_TIMEOUT_MS
            )
        elif way_out == "#rejoin":
            await page.locator("#rejoin").click()
            await expect(page.locator("#position")).to_contain_text("You are number 2 of 2.")
            # A new place, at the back, for the same visitor (its ticket is still its own).
            assert await page_visitor(page, codec, p) == visitor
            assert await redis.zrank(keys.line, visitor) == 1
        elif ending == "closed":
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url) if STATUS.search(r.url) else None)
            await page.wait_for_timeout(1500)  # it asked every second until now
            assert asked == []

    if ending == "sold-out":
        async with new_page(browser, locale="ko-KR") as late:
            await late.goto(f"{queue_url}/wait/{p}")  # the join answers 409: no line to join
            await expect(late.locator("#headline")).to_have_text("품절되었습니다")
            await expect(late.locator("#detail")).to_contain_text("대기열이 닫혔습니다")
            await expect(late.locator("#leave")).to_be_hidden()


async def test_before_the_waiting_room_opens_the_page_waits_to_join(
    browser: Any, queue_url: str, redis: Redis
) -> None:
    keys = await new_sale(redis, sale_start=iso_in(2 * 86400), prequeue_s=600)  # in 2 days
    async with new_page(browser) as page:
        await page.goto(f"{queue_url}/wait/{keys.product_id}")
        await expect(page.locator("#headline")).to_have_text("The waiting room is not open yet")
        await expect(page.locator("#detail")).to_contain_text("this page joins by itself")
        # Two days away: with the date, not a bare clock time.
        await expect(page.locator("#detail")).to_contain_text(re.compile(r"20\d\d"))
        assert not any(c["name"].startswith("fs_ticket_") for c in await page.context.cookies())


async def test_keyboard_alone_and_a_screen_reader(
    browser: Any, queue_url: str, redis: Redis
) -> None:
    keys = await new_sale(redis, opened=False, abandon_s=ABANDON_S)
    async with new_page(browser, viewport=PHONE) as page:
        await page.goto(f"{queue_url}/wait/{keys.product_id}")
        await expect(page.locator("#position")).to_have_text("You are number 1.")
        # The position is inside the polite live region, which speaks it whole when it changes.
        live = page.locator("#status")
        await expect(live).to_have_attribute("aria-live", "polite")
        await expect(live).to_have_attribute("aria-atomic", "true")
        await expect(live.locator("#position")).to_have_count(1)
        await expect(page.locator("#countdown")).to_have_attribute("aria-hidden", "true")
        await expect(page.locator("#bar")).to_have_attribute("role", "progressbar")

        async def tab_to(element_id: str) -> None:
            for _ in range(8):
                await page.keyboard.press("Tab")
                if await page.evaluate("document.activeElement.id") == element_id:
                    return
            raise AssertionError(f"Tab never reached #{element_id}")

        await tab_to("lang")
        await page.keyboard.press("Enter")
        await expect(page.locator("#headline")).to_have_text("아직 판매 시작 전입니다")
        await tab_to("leave")
        await page.keyboard.press("Space")
        await expect(page.locator("#headline")).to_have_text("대기열에서 나왔습니다")
        # The pressed button is gone: the focus moved to the one that undoes it.
        assert await page.evaluate("document.activeElement.id") == "rejoin"
        await page.keyboard.press("Enter")
        await expect(page.locator("#position")).to_have_text("대기 순서는 1번입니다.")
        await assert_fits_a_phone(page)
        await assert_aa_contrast(page)
