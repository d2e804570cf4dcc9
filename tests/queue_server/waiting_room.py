"""What the waiting room's browser tests share: the server under uvicorn, visitors who join
through the API, reading the page's own visitor, and the checks every state must pass
(screenshots in both languages and both widths, no overflow at 360 px, AA contrast)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from infra.sale.keys import SaleKeys
from tests.browser import DESKTOP, PHONE, screenshot
from token_gate.codec import TokenCodec

# poll_after_ms is capped at abandon_s / 3: with 10 s (the least a sale may have) the page
# asks at least every 3.3 s, so each step of the line shows within a few seconds.
ABANDON_S = 10
STEP_TIMEOUT_MS = 10_000


async def join_api(queue_url: str, product_id: str) -> str:
    """Another visitor, joining through the API; returns its ticket."""
    async with httpx.AsyncClient(base_url=queue_url, trust_env=False) as client:
        response = await client.post(f"/queue/{product_id}/join")
    assert response.status_code == 201, response.text
    return response.json()["ticket"]


async def page_visitor(page: Any, codec: TokenCodec, product_id: str) -> str:
    """The page's visitor id, from its (HttpOnly) ticket cookie."""
    cookies = await page.context.cookies()
    ticket = next(c["value"] for c in cookies if c["name"] == f"fs_ticket_{product_id}")
    return codec.read_ticket(ticket).visitor_id


async def a_line_ahead(redis: Redis, keys: SaleKeys) -> None:
    """Someone who never asks stands first, so a page that joins an open sale waits in line
    (an empty line with room lets a visitor straight through)."""
    await redis.zadd(keys.line, {"filler": 0})


async def scroll_width(page: Any) -> int:
    return await page.evaluate("document.documentElement.scrollWidth")


async def assert_fits_a_phone(page: Any) -> None:
    width = await scroll_width(page)
    assert width <= PHONE["width"], f"the page is {width} px wide at {PHONE['width']} px"


# WCAG 2.x contrast of every visible element's own text against its effective background.
CONTRAST_JS = """() => {
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!el.checkVisibility()) continue;
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const style = getComputedStyle(el);
    const [hi, lo] = [lum(rgb(style.color)), lum(background(el))].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const large = size >= 24 || (size >= 18.66 && bold);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.id || el.tagName}: ${ratio.toFixed(2)}`);
  }
  return bad;
}"""


async def assert_aa_contrast(page: Any) -> None:
    assert await page.evaluate(CONTRAST_JS) == []


async def language(page: Any) -> str:
    return await page.evaluate("document.documentElement.lang")


async def every_look(page: Any, state: str, tmp_path: Path) -> None:
    """Screenshots of this state in both languages at both widths
    (``waiting-room-<state>-<lang>-<desktop|phone>``), checking at each that it holds: AA
    contrast, and nothing wider than 360 px on the phone. Leaves the page as it found it."""
    first = await language(page)
    for flip in (False, True):
        if flip:
            await page.locator("[data-lang-switch]").click()
        lang = await language(page)
        headline = await page.locator("#headline").inner_text()
        assert bool(re.search("[\uac00-\ud7a3]", headline)) == (lang == "ko"), headline
        await screenshot(page, f"waiting-room-{state}-{lang}-desktop", tmp_path)
        await page.set_viewport_size(PHONE)
        await assert_fits_a_phone(page)
        await assert_aa_contrast(page)
        await screenshot(page, f"waiting-room-{state}-{lang}-phone", tmp_path)
        await page.set_viewport_size(DESKTOP)
    await page.locator("[data-lang-switch]").click()
    assert await language(page) == first


def now_ms() -> int:
    return int(time.time() * 1000)
