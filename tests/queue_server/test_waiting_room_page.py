"""The waiting-room page in a real browser (Debian's Chromium driven by Playwright) against the
real queue server under uvicorn and real Valkey; the line moves by the scheduler's own
admission ticks. The visitor's journey: in line, its turn, on to the shop page; leaving; a
second tab; the pace of its polls; a network that fails and comes back.

Screenshots land in the test's tmp dir, or in ``$FLASHSALE_SCREENSHOTS`` (tests/browser.py).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from infra.settings import Settings
from tests.browser import new_page, require_browser
from tests.queue_server.waiting_room import (
    ABANDON_S,
    STEP_TIMEOUT_MS,
    a_line_ahead,
    every_look,
    join_api,
    page_visitor,
)
from tests.support import new_sale, open_sale
from token_gate.codec import TokenCodec

require_browser()
from playwright.async_api import Page, Route, expect  # noqa: E402

pytestmark = pytest.mark.slow

Tick = Callable[[str], Awaitable[tuple[str, ...]]]
STATUS = re.compile(r"/queue/[a-z0-9-]+/(join|status)$")


def _shop_page(received: list[str]) -> Callable[[Route], Awaitable[None]]:
    """Stands in for the gate's shop page (not running here): records where the page went."""

    async def fulfil(route: Route) -> None:
        received.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<h1>shop</h1>")

    return fulfil


async def test_the_page_follows_the_line_to_its_turn_and_on_to_the_shop(
    browser: Any, queue_url: str, redis: Redis, tick: Tick, settings: Settings, tmp_path: Path
) -> None:
    # A pre-queue first, so that the line is not empty when it opens: an open sale with room
    # lets a visitor who finds nobody in line straight through.
    keys = await new_sale(redis, opened=False, batch_size=1, abandon_s=ABANDON_S)
    p = keys.product_id
    for _ in range(2):
        await join_api(queue_url, p)

    async with new_page(browser) as page:
        shop: list[str] = []
        await page.route("**/shop/**", _shop_page(shop))
        await page.goto(f"{queue_url}/wait/{p}")
        await expect(page.locator("#headline")).to_have_text("The sale has not started yet")
        await expect(page.locator("#position")).to_have_text("You are number 3.")
        await expect(page.locator("#leave")).to_be_visible()
        await expect(page.locator("#product")).to_have_text("Test sneaker")

        assert await open_sale(redis, p) == "done"
        await expect(page.locator("#headline")).to_have_text(
            "You are in line", timeout=STEP_TIMEOUT_MS
        )
        await expect(page.locator("#position")).to_have_text(
            "You are number 3 of 3. 2 people are ahead of you."
        )
        # One admitted a second (batch_size 1, interval 1 s): three places, about 3 seconds.
        await expect(page.locator("#eta")).to_contain_text("Expected wait: about 3 seconds")
        await every_look(page, "in-line", tmp_path)

        assert len(await tick(p)) == 1
        await expect(page.locator("#position")).to_have_text(
            "You are number 2 of 2. 1 person is ahead of you.", timeout=STEP_TIMEOUT_MS
        )
        assert await page.title() == "#2 · Waiting room: Test sneaker"  # seen from a tab
        bar = page.locator("#bar")
        assert 30 <= int(await bar.get_attribute("aria-valuenow") or 0) <= 35  # 1 of 3 gone

        # The shop page is held back until the screenshots of "your turn" are taken.
        await tick(p)
        visitor = await page_visitor(page, TokenCodec(settings.secret_keys), p)
        assert await tick(p) == (visitor,)
        await expect(page.locator("#headline")).to_have_text(
            "It's your turn!", timeout=STEP_TIMEOUT_MS
        )
        turn_at = time.monotonic()
        token = await redis.hget(keys.tokens, visitor)
        target = f"{settings.gate_url}/shop/{p}?token={token}"
        await expect(page.locator("#shop")).to_have_attribute("href", target)
        await expect(page.locator("#shop")).to_be_visible()  # the fallback, meanwhile
        await expect(page.locator("#leave")).to_be_hidden()
        await expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "100")
        await expect(page.locator("#detail")).to_contain_text("Taking you to the shop")
        await page.wait_for_url(target, timeout=STEP_TIMEOUT_MS)
        waited = time.monotonic() - turn_at
        # "Your turn" for about 2 s, then on by itself, with the token for the gate to take.
        assert 1.2 <= waited <= 4, waited
        assert shop == [target]
        await expect(page.locator("h1")).to_have_text("shop")


async def test_the_your_turn_moment_in_every_look(
    browser: Any, queue_url: str, redis: Redis, tmp_path: Path
) -> None:
    """The screenshots of "your turn", in its 2 s: the page's clock is Playwright's, so the
    moment lasts until they are taken (a pass-through admission: the line is empty and the
    sale open)."""
    keys = await new_sale(redis, abandon_s=ABANDON_S)
    async with new_page(browser) as page:
        shop: list[str] = []
        await page.route("**/shop/**", _shop_page(shop))
        await page.clock.install()
        await page.goto(f"{queue_url}/wait/{keys.product_id}")
        await expect(page.locator("#headline")).to_have_text("It's your turn!")
        await every_look(page, "your-turn", tmp_path)
        await page.clock.run_for(1_500)
        assert shop == []  # still the moment
        await page.clock.run_for(1_000)
        await expect(page.locator("h1")).to_have_text("shop")
        assert len(shop) == 1


async def test_leaving_frees_the_place(
    browser: Any, queue_url: str, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    keys = await new_sale(redis, opened=False, abandon_s=ABANDON_S)
    p = keys.product_id
    codec = TokenCodec(settings.secret_keys)
    async with new_page(browser) as page:
        await page.goto(f"{queue_url}/wait/{p}")
        await expect(page.locator("#position")).to_have_text("You are number 1.")
        behind = await join_api(queue_url, p)
        assert await open_sale(redis, p) == "done"
        await expect(page.locator("#position")).to_contain_text(
            "You are number 1 of 2.", timeout=STEP_TIMEOUT_MS
        )
        await expect(page.locator("#position")).to_contain_text("You are next.")
        visitor = await page_visitor(page, codec, p)

        await page.locator("#leave").click()
        await expect(page.locator("#headline")).to_have_text("You left the line")
        await expect(page.locator("#detail")).to_contain_text("You can join again, at the back")
        await expect(page.locator("#rejoin")).to_be_visible()
        await expect(page.locator("#bar")).to_be_hidden()
        await expect(page.locator("#leave")).to_be_hidden()

        for _ in range(50):  # the DELETE is sent after the page says so
            if await redis.zscore(keys.line, visitor) is None:
                break
            await page.wait_for_timeout(100)
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
        await expect(page.locator("#position")).to_contain_text("You are number 2 of 2.")
        await expect(page.locator("#rejoin")).to_be_hidden()
        assert await page_visitor(page, codec, p) != visitor


async def test_a_second_tab_shows_the_same_place(
    browser: Any, queue_url: str, redis: Redis, settings: Settings
) -> None:
    keys = await new_sale(redis, abandon_s=ABANDON_S)
    p = keys.product_id
    await a_line_ahead(redis, keys)
    await join_api(queue_url, p)
    async with new_page(browser) as page:
        await page.goto(f"{queue_url}/wait/{p}")
        await expect(page.locator("#position")).to_contain_text("You are number 3 of 3.")
        await join_api(queue_url, p)  # someone behind: the line grows, the place does not
        second = await page.context.new_page()  # the same cookies: the same visitor
        await second.goto(f"{queue_url}/wait/{p}")
        await expect(second.locator("#position")).to_contain_text("You are number 3 of 4.")
        await expect(page.locator("#position")).to_contain_text(
            "You are number 3 of 4.", timeout=STEP_TIMEOUT_MS
        )
        assert await redis.zcard(keys.line) == 4  # no second place
        codec = TokenCodec(settings.secret_keys)
        assert await page_visitor(second, codec, p) == await page_visitor(page, codec, p)


class _Polls:
    """The page's join and status requests: each counted when it leaves (``request``), and,
    once answered, when it left by the browser's own clock and what ``poll_after_ms`` its
    answer gave."""

    def __init__(self, page: Page) -> None:
        self.count = 0
        self.answered: list[tuple[float, int]] = []  # (left at, ms; its poll_after_ms)
        page.on("request", self._sent)
        page.on("requestfinished", self._finished)

    def _sent(self, request: Any) -> None:
        if STATUS.search(request.url):
            self.count += 1

    async def _finished(self, request: Any) -> None:
        if not STATUS.search(request.url):
            return
        response = await request.response()
        assert response is not None and response.ok, request.url
        body = await response.json()
        self.answered.append((request.timing["startTime"], body["poll_after_ms"]))


# The browser's request timings are in milliseconds with a fraction: allow for rounding.
CLOCK_SLACK_MS = 2


async def test_the_page_never_polls_sooner_than_poll_after_ms(
    browser: Any, queue_url: str, redis: Redis
) -> None:
    # Started, not opened (no scheduler here): each answer says "ask again in 1-2 s", the
    # second of jitter spreading the herd at the start; then in line, every second.
    keys = await new_sale(redis, opened=False, abandon_s=ABANDON_S)
    async with new_page(browser) as page:
        polls = _Polls(page)
        await page.goto(f"{queue_url}/wait/{keys.product_id}")
        await page.wait_for_timeout(5_000)
        await join_api(queue_url, keys.product_id)  # someone behind, so the line is not empty
        assert await open_sale(redis, keys.product_id) == "done"
        await expect(page.locator("#headline")).to_have_text(
            "You are in line", timeout=STEP_TIMEOUT_MS
        )
        await page.wait_for_timeout(3_000)
        answered = list(polls.answered)
        assert polls.count - len(answered) <= 1  # every request but one in flight is here
    assert len(answered) >= 6, answered
    told = [ms for _, ms in answered]
    assert len(set(told)) > 2, told  # the jitter: a page that ignored it would show here
    for (left, after), (next_left, _) in itertools.pairwise(answered):
        gap_ms = next_left - left
        assert gap_ms >= after - CLOCK_SLACK_MS, answered
        # …and not much later either: it asks again when told, the line keeps moving for it.
        assert gap_ms <= after + 1000, answered


async def test_network_errors_back_off_and_keep_the_ticket(
    browser: Any, queue_url: str, redis: Redis, settings: Settings
) -> None:
    keys = await new_sale(redis, abandon_s=ABANDON_S)
    p = keys.product_id
    await a_line_ahead(redis, keys)
    async with new_page(browser) as page:
        await page.goto(f"{queue_url}/wait/{p}")
        await expect(page.locator("#position")).to_contain_text("You are number 2 of 2.")
        visitor = await page_visitor(page, TokenCodec(settings.secret_keys), p)

        cut_at: list[float] = []  # when each status request left: three cut, then through

        async def cut(route: Route) -> None:
            cut_at.append(time.monotonic())
            if len(cut_at) <= 3:
                await route.abort("internetdisconnected")
            else:
                await route.continue_()

        await page.route(STATUS, cut)
        await expect(page.locator("#notice")).to_contain_text(
            "Connection problem. Trying again in", timeout=STEP_TIMEOUT_MS
        )
        await expect(page.locator("#notice")).to_contain_text("your place is kept")
        await expect(page.locator("#position")).to_contain_text("You are number 2 of 2.")
        await expect(page.locator("#notice")).to_be_hidden(timeout=3 * STEP_TIMEOUT_MS)
        assert len(cut_at) >= 4
        # 1 s, then 2 s, then 4 s (each with up to 20 % jitter, and never under the 1 s the
        # server last asked for). Each retry leaves only after the handler has cut the one
        # before, so these gaps can only be longer than the page's, never shorter.
        backoff = [b - a for a, b in itertools.pairwise(cut_at[:4])]
        assert backoff[0] >= 1, backoff
        assert backoff[1] >= 2, backoff
        assert backoff[2] >= 4, backoff
        await expect(page.locator("#position")).to_contain_text("You are number 2 of 2.")
        # The same visitor, in the same place: nothing was joined again.
        assert await page_visitor(page, TokenCodec(settings.secret_keys), p) == visitor
        assert await redis.zcard(keys.line) == 2

        # Busy: a 503 with Retry-After is honoured, whatever the backoff would say.
        await page.unroute(STATUS)
        busy: list[float] = []

        async def overloaded(route: Route) -> None:
            if not busy:
                busy.append(time.monotonic())
                await route.fulfill(
                    status=503,
                    headers={"Retry-After": "3"},
                    json={"error": "unavailable", "detail": "busy"},
                )
            else:
                busy.append(time.monotonic())
                await route.continue_()

        await page.route(STATUS, overloaded)
        await expect(page.locator("#notice")).to_contain_text(
            "Many people are arriving at once", timeout=STEP_TIMEOUT_MS
        )
        await expect(page.locator("#notice")).to_be_hidden(timeout=STEP_TIMEOUT_MS)
        assert busy[1] - busy[0] >= 3, busy
        assert await page_visitor(page, TokenCodec(settings.secret_keys), p) == visitor
        # A poll may be in the handler as the page closes: its continue_() would then raise
        # in a task of its own, after the test.
        await page.unroute_all(behavior="ignoreErrors")
