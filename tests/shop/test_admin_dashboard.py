"""GET /admin/dashboard and its files, over HTTP (the page itself in Chromium: test_dashboard.py).

The page and its files answer without the admin key and without the gate's secret (an
operator holds neither the secret nor, before signing in, a way to send the key); every data
call behind them needs the key.
"""

from __future__ import annotations

import re
from importlib import resources

import httpx
import pytest

from infra.constants import HEADER_GATE_SECRET
from shop.dlq import LIST_LIMIT
from tests.shop.helpers import assert_error

FILES = {
    "/admin/static/dashboard.js": "text/javascript",
    "/admin/static/dashboard_charts.js": "text/javascript",
    "/admin/static/dashboard.css": "text/css",
    "/admin/static/vendor/uplot/uPlot.iife.min.js": "text/javascript",
    "/admin/static/vendor/uplot/uPlot.min.css": "text/css",
    "/admin/assets/base.css": "text/css",
    "/admin/assets/i18n.js": "text/javascript",
}


@pytest.fixture
def bare(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The shop's client without the gate's secret: what an operator's browser is."""
    del client.headers[HEADER_GATE_SECRET]
    return client


async def test_the_page_needs_no_key_and_holds_no_data(bare: httpx.AsyncClient) -> None:
    reply = await bare.get("/admin/dashboard")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    csp = reply.headers["content-security-policy"]
    # The browser itself refuses other origins, and no other site may frame the controls.
    for directive in ("default-src 'none'", "connect-src 'self'", "script-src 'self'"):
        assert directive in csp
    assert "frame-ancestors 'none'" in csp
    assert reply.headers["cache-control"] == "no-store"
    page = reply.text
    # Every file the page loads is one of ours, under /admin/ (never another origin).
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert loaded and all(url.startswith("/admin/") for url in loaded), loaded
    assert set(loaded) == set(FILES) - {"/admin/assets/i18n.js"}
    # The key's input has no name: a form submitted without the script sends it nowhere.
    key_input = re.search(r'<input id="key-input"[^>]*>', page)
    assert key_input and "name=" not in key_input.group(0)


@pytest.mark.parametrize(("path", "media"), FILES.items())
async def test_the_files_are_served_without_key_or_secret(
    bare: httpx.AsyncClient, path: str, media: str
) -> None:
    reply = await bare.get(path)
    assert reply.status_code == 200, path
    assert reply.headers["content-type"].startswith(media)
    assert len(reply.content) > 100


async def test_uplot_ships_with_its_licence(bare: httpx.AsyncClient) -> None:
    licence = resources.files("shop") / "static" / "vendor" / "uplot" / "LICENSE"
    assert "MIT" in licence.read_text() and "Leon Sorokin" in licence.read_text()
    script = (await bare.get("/admin/static/vendor/uplot/uPlot.iife.min.js")).text
    assert "uPlot" in script


@pytest.mark.parametrize(
    "path",
    [
        "/admin/static/missing.js",
        "/admin/static/dashboard.html",  # the page has its own route, not this one
        "/admin/static/../admin.py",
        "/admin/static/%2e%2e/admin.py",
        "/admin/static/vendor/uplot/LICENSE",
        "/admin/static/vendor/uplot/",
        "/admin/static/",
        "/admin/assets/missing.css",
        "/admin/assets/..%2fapp.py",
    ],
)
async def test_nothing_else_is_reachable(bare: httpx.AsyncClient, path: str) -> None:
    assert_error(await bare.get(path), 404, "not_found")


async def test_data_behind_the_page_needs_the_key(bare: httpx.AsyncClient) -> None:
    for path in ("/admin/products", "/admin/dlq"):
        assert_error(await bare.get(path), 401, "unauthorized")


def test_the_page_knows_how_many_dead_letters_a_listing_holds() -> None:
    """A full GET /admin/dlq page reads "500 or more" on the dashboard: its constant is the
    shop's limit."""
    script = (resources.files("shop") / "static" / "dashboard.js").read_text()
    match = re.search(r"const DLQ_LISTED = (\d+);", script)
    assert match and int(match.group(1)) == LIST_LIMIT
