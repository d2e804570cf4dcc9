"""Real Chromium for the browser tests: Debian's ``chromium``, driven by Playwright.

Playwright cannot download its own browser here, so the tests launch ``/usr/bin/chromium``.
Without it they skip, with the install command as the reason, except where
``FLASHSALE_REQUIRE_BROWSER=1`` (``.ci/run`` sets it): there a missing browser fails the run
instead of quietly skipping what it was meant to prove.

Use it from a test module::

    from tests.browser import playwright_api, require_browser, new_page
    require_browser()  # at module level, before anything launches
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install -y chromium fonts-noto-cjk"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps dialling Google's hosts, which this network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}  # the narrowest layout the pages must hold


def browser_required() -> bool:
    return os.environ.get("FLASHSALE_REQUIRE_BROWSER", "") not in ("", "0")


def require_browser() -> None:
    """Skip the calling module when Chromium or Playwright is missing (fail under CI)."""
    missing = None
    if not os.access(CHROMIUM, os.X_OK):
        missing = f"no Chromium at {CHROMIUM}: run `{INSTALL}` (Playwright cannot download one)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "Playwright is missing: pip install -e '.[dev]'"
    if missing is None:
        return
    if browser_required():
        pytest.fail(f"FLASHSALE_REQUIRE_BROWSER is set, but {missing}", pytrace=False)
    pytest.skip(missing, allow_module_level=True)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def new_page(
    browser: Any, *, locale: str = "en-US", viewport: dict[str, int] | None = None
) -> AsyncIterator[Any]:
    """A page in a fresh context (its own cookies and storage). Fails the test if the page's
    script threw, if the page asked anything of another origin than the platform's, or if
    its Content-Security-Policy refused anything (Chromium says so on the console): every
    browser test then holds its page to the policy, in every state it walks through."""
    context = await browser.new_context(locale=locale, viewport=viewport or DESKTOP)
    try:
        page = await context.new_page()
        errors: list[str] = []
        foreign: list[str] = []
        refused: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                refused.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        page.on(
            "request",
            lambda req: (
                None
                if req.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:"))
                else foreign.append(req.url)
            ),
        )
        yield page
        assert not errors, f"the page's script failed: {errors}"
        assert not foreign, f"the page asked other origins: {foreign}"
        assert not refused, f"the page's policy refused: {refused}"
    finally:
        await context.close()


async def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Saves a screenshot of the page as ``<name>.png``: in the test's tmp dir, or, with
    ``FLASHSALE_SCREENSHOTS=docs/screenshots``, in that folder (how the README's pictures
    are made: ``FLASHSALE_SCREENSHOTS=docs/screenshots make test``)."""
    folder = Path(os.environ.get("FLASHSALE_SCREENSHOTS") or tmp_path)
    os.makedirs(folder, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=path, animations="disabled", full_page=True)
    return path
