"""The headers of the pages people meet, over HTTP to the real servers: the waiting room in
every state it renders, the shop page and its redirects, the operator dashboard.

Each page answers one strict Content-Security-Policy (infra.web.pages), parsed here directive
by directive, with nosniff, no-referrer, X-Frame-Options DENY and no-store; and its HTML
holds nothing the policy would refuse (no inline script or style, no event attribute), so the
policy is not what keeps the page from working. Chromium enforcing it: test_pages_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import ACCESS_COOKIE
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from shop.sales import apply
from tests.security.conftest import Platform, cookie
from tests.support import iso_in, new_sale, unique_id

EXPECTED_POLICY = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "form-action": ["'none'"],
    "base-uri": ["'none'"],
    "object-src": ["'none'"],
    "frame-ancestors": ["'none'"],
}
# Source expressions that would undo the policy, wherever they stood.
LOOSE = ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "'strict-dynamic'", "*")
MEDIA = {".js": "text/javascript", ".css": "text/css"}
WAIT_STATES = ("scheduled", "prequeue", "open", "paused", "sold_out", "closed")


def directives(policy: str) -> dict[str, list[str]]:
    """A policy as a browser reads it (CSP3 "parse a serialized policy"): directives split on
    ";", names case-insensitive, and a repeated directive is ignored, which a test must not
    let pass unnoticed."""
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        tokens = part.split()
        if not tokens:
            continue
        name = tokens[0].lower()
        assert name not in parsed, f"{name} twice: the browser ignores the second"
        parsed[name] = tokens[1:]
    return parsed


def assert_page_headers(reply: httpx.Response, what: str) -> None:
    assert reply.status_code == 200, (what, reply.text)
    assert reply.headers["content-type"].startswith("text/html"), what
    policies = reply.headers.get_list("content-security-policy")
    assert len(policies) == 1, (what, policies)  # two would both apply: harder to reason on
    parsed = directives(policies[0])
    assert parsed == EXPECTED_POLICY, (what, parsed)
    sources = [s for values in parsed.values() for s in values]
    assert not any(s in LOOSE or s.startswith(("'nonce-", "'sha")) for s in sources), what
    assert "content-security-policy-report-only" not in reply.headers, what
    assert reply.headers["x-content-type-options"] == "nosniff", what
    assert reply.headers["referrer-policy"] == "no-referrer", what
    assert reply.headers["x-frame-options"] == "DENY", what
    assert reply.headers["cache-control"] == "no-store", what


class _Markup(HTMLParser):
    """What a page's HTML asks the browser to run, apply or load."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.loads: list[str] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>: an inline attribute")
            if name in ("src", "href", "action") and (value or "").startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:>")
        if tag == "style":
            self.problems.append("a <style> element")
        if tag == "script":
            self._in_script = named
            if named.get("src"):
                self.loads.append(str(named["src"]))
        if tag == "link" and named.get("rel") == "stylesheet":
            self.loads.append(str(named["href"]))

    def handle_data(self, data: str) -> None:
        script = self._in_script
        if script is not None and data.strip():
            # A data block (type application/json) is not a script: no policy runs it.
            if script.get("src") or script.get("type") != "application/json":
                self.problems.append(f"an inline script: {data.strip()[:60]!r}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None


async def assert_nothing_inline_and_files_served(
    client: httpx.AsyncClient, page_url: str, html: str
) -> None:
    """No inline script, style or handler in `html`; each file it loads answers 200 from the
    page's own origin, as the right type, not sniffed, with the digest its URL names."""
    markup = _Markup()
    markup.feed(html)
    assert not markup.problems, markup.problems
    assert markup.loads, "the page loads its script and style"
    for src in markup.loads:
        url = urljoin(page_url, src)
        assert urlsplit(url).netloc == urlsplit(page_url).netloc, src
        reply = await client.get(url)
        assert reply.status_code == 200, src
        suffix = "." + urlsplit(url).path.rsplit(".", 1)[1]
        assert reply.headers["content-type"].startswith(MEDIA[suffix]), src
        assert reply.headers["x-content-type-options"] == "nosniff", src
        version = parse_qs(urlsplit(url).query).get("v")
        if version:  # the dashboard's files are plain /admin/static/ paths
            assert version == [hashlib.sha256(reply.content).hexdigest()[:12]], src


async def sale_in(redis: Redis, state: str) -> SaleKeys:
    """A sale in `state`, as the waiting room reads it."""
    if state == "scheduled":
        return await new_sale(redis, sale_start=iso_in(2 * 86400), prequeue_s=600)
    if state == "prequeue":
        return await new_sale(redis, opened=False, queue_mode="shuffle_prequeue")
    keys = await new_sale(redis)
    if state == "paused":
        await apply(SaleScripts(redis), keys, {"paused": "1"})
    elif state == "sold_out":
        await redis.set(keys.stock, 0)
    elif state == "closed":
        await redis.hset(keys.sale, "cancelled", "1")
    return keys


@pytest.mark.parametrize("lang", ["ko-KR,ko;q=0.9", "en-US,en;q=0.9"])
@pytest.mark.parametrize("state", WAIT_STATES)
async def test_the_waiting_room_answers_the_page_headers_in_every_state(
    platform: Platform, client: httpx.AsyncClient, redis: Redis, state: str, lang: str
) -> None:
    keys = await sale_in(redis, state)
    url = f"{platform.queue_url}/wait/{keys.product_id}"
    reply = await client.get(url, headers={"Accept-Language": lang})
    assert_page_headers(reply, f"waiting room, {state}")
    sale = re.search(r'<script type="application/json" id="fs-sale">(.*?)</script>', reply.text)
    assert sale and json.loads(sale[1])["state"] == state  # the state this test meant
    await assert_nothing_inline_and_files_served(client, url, reply.text)
    head = await client.head(url)
    assert head.headers["content-security-policy"] == reply.headers["content-security-policy"]


async def test_the_shop_page_answers_the_page_headers(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    body = {"id": unique_id(), "name": "Header sneaker", "price": 12900, "currency": "EUR",
            "stock": 5, "sale_start": iso_in(-1), "queue_mode": "fifo"}  # fmt: skip
    created = await client.post(
        f"{platform.shop_url}/admin/products", json=body, headers=platform.admin()
    )
    assert created.status_code == 201, created.text
    pid = body["id"]
    token = platform.codec.mint_access(unique_id("v"), pid, int(time.time()) + 300)
    url = f"{platform.gate_url}/shop/{pid}"

    # The hand-over: ?token= becomes the cookie; the redirect carrying it leaks no Referer.
    moved = await client.get(url, params={"token": token})
    assert moved.status_code == 303
    assert moved.headers["referrer-policy"] == "no-referrer"
    assert moved.headers["cache-control"] == "no-store"
    away = await client.get(url)  # no token: to the waiting room, no Referer either
    assert away.status_code == 303
    assert away.headers["referrer-policy"] == "no-referrer"

    reply = await client.get(url, headers=cookie(ACCESS_COOKIE, token))
    assert_page_headers(reply, "shop page")
    assert "nonce" not in reply.text  # nothing inline is left to let through
    await assert_nothing_inline_and_files_served(client, url, reply.text)


async def test_the_dashboard_answers_the_page_headers(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    url = f"{platform.shop_url}/admin/dashboard"
    reply = await client.get(url)
    assert_page_headers(reply, "dashboard")
    await assert_nothing_inline_and_files_served(client, url, reply.text)


async def test_the_three_pages_answer_one_policy(
    platform: Platform, client: httpx.AsyncClient, redis: Redis
) -> None:
    """One policy, written once (infra.web.pages): the same bytes from the three servers."""
    keys = await sale_in(redis, "open")
    pid = keys.product_id
    token = platform.codec.mint_access(unique_id("v"), pid, int(time.time()) + 300)
    replies: list[Any] = [
        await client.get(f"{platform.queue_url}/wait/{pid}"),
        await client.get(f"{platform.gate_url}/shop/{pid}", headers=cookie(ACCESS_COOKIE, token)),
        await client.get(f"{platform.shop_url}/admin/dashboard"),
    ]
    policies = {r.headers["content-security-policy"] for r in replies}
    assert len(policies) == 1, policies


def test_the_checks_themselves_catch_what_they_look_for() -> None:
    """The parsers above must fail on what they are there to find."""
    markup = _Markup()
    markup.feed(
        '<script>alert(1)</script><script type="module">x()</script><style>p{}</style>'
        '<p style="color:red" onclick="x()">a</p><a href="javascript:x()">b</a>'
        '<script type="application/json" id="d">{"a": 1}</script><script src="/s.js"></script>'
    )
    assert len(markup.problems) == 6, markup.problems
    assert markup.loads == ["/s.js"]
    with pytest.raises(AssertionError, match="twice"):
        directives("script-src 'self'; SCRIPT-SRC 'unsafe-inline'")
    assert directives(" default-src  'none' ;; img-src 'self' data: ") == {
        "default-src": ["'none'"],
        "img-src": ["'self'", "data:"],
    }
