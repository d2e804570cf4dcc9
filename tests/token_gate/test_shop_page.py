"""GET /shop/{product_id} on the gate over HTTP: who gets the page, who is sent to the waiting
room, and how a ?token= becomes the fs_access cookie. The page itself runs in
test_shop_page_browser.py."""

from __future__ import annotations

import logging
import time
from http.cookies import SimpleCookie

import httpx
import pytest

from infra.constants import ACCESS_COOKIE
from infra.settings import Settings
from tests.shop.helpers import ADMIN, assert_error
from tests.support import running, sale_body, unique_id
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

OTHER_SECRET = "another-deployment-secret-0000000000"


def cookie(token: str) -> dict[str, str]:
    # A header, not httpx's per-request cookies= (deprecated, and warnings are errors here).
    return {"Cookie": f"{ACCESS_COOKIE}={token}"}


def access(codec: TokenCodec, product_id: str, ttl_s: int = 300) -> str:
    return codec.mint_access(unique_id("v"), product_id, int(time.time()) + ttl_s)


async def new_product(shop: httpx.AsyncClient, **fields: object) -> str:
    body = sale_body(**fields)
    reply = await shop.post("/admin/products", json=body, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    return str(body["id"])


def not_valid_here(codec: TokenCodec, product_id: str) -> dict[str, str]:
    """Every token that must not open the shop page of `product_id`."""
    now = int(time.time())
    return {
        "garbage": "not-a-token",
        "ticket": codec.mint_ticket("v", product_id),
        "expired": codec.mint_access("v", product_id, now - 1),
        "other_product": codec.mint_access("v", "another-product", now + 300),
        "forged": TokenCodec((OTHER_SECRET,)).mint_access("v", product_id, now + 300),
    }


def assert_to_waiting_room(
    reply: httpx.Response, settings: Settings, product_id: str, what: str = ""
) -> None:
    assert reply.status_code == 303, (what, reply.text)
    assert reply.headers["location"] == f"{settings.queue_url}/wait/{product_id}"
    assert "set-cookie" not in reply.headers
    assert reply.headers["cache-control"] == "no-store"


async def test_without_a_valid_token_the_page_sends_to_the_waiting_room(
    gate: httpx.AsyncClient, shop: httpx.AsyncClient, gate_settings: Settings, codec: TokenCodec
) -> None:
    pid = await new_product(shop)
    assert_to_waiting_room(await gate.get(f"/shop/{pid}"), gate_settings, pid)
    assert_to_waiting_room(await gate.get(f"/shop/{pid}?token="), gate_settings, pid)
    for kind, token in not_valid_here(codec, pid).items():
        by_cookie = await gate.get(f"/shop/{pid}", headers=cookie(token))
        assert_to_waiting_room(by_cookie, gate_settings, pid, f"cookie: {kind}")
        by_query = await gate.get(f"/shop/{pid}", params={"token": token})
        assert_to_waiting_room(by_query, gate_settings, pid, f"query: {kind}")
    # The API itself still answers JSON 401s: only the page for people redirects.
    reply = await gate.post(f"/products/{pid}/orders", json={"quantity": 1})
    assert_error(reply, 401, "token_missing")


async def test_a_query_token_moves_into_the_cookie_and_out_of_the_url(
    gate: httpx.AsyncClient, shop: httpx.AsyncClient, codec: TokenCodec
) -> None:
    pid = await new_product(shop, name="Cookie sneaker")
    token = access(codec, pid, ttl_s=300)
    reply = await gate.get(f"/shop/{pid}", params={"token": token})
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/shop/{pid}"  # the same page, no query
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["referrer-policy"] == "no-referrer"
    jar: SimpleCookie = SimpleCookie()
    jar.load(reply.headers["set-cookie"])
    sent = jar[ACCESS_COOKIE]
    assert sent.value == token
    assert sent["httponly"] is True
    assert sent["samesite"].lower() == "lax"
    assert sent["path"] == "/"
    assert not sent["secure"]  # the gate is reached over http here
    assert 295 <= int(sent["max-age"]) <= 300  # the token's remaining life

    page = await gate.get(f"/shop/{pid}", headers=cookie(token))
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert token not in page.text  # HttpOnly stays meaningful: the page never holds the token
    assert pid in page.text

    # The page's JSON calls work from the cookie alone (no Authorization header).
    order = await gate.post(f"/products/{pid}/orders", json={"quantity": 1}, headers=cookie(token))
    assert order.status_code == 202, order.text


async def test_a_stale_query_token_next_to_a_good_cookie_only_cleans_the_url(
    gate: httpx.AsyncClient, shop: httpx.AsyncClient, codec: TokenCodec
) -> None:
    pid = await new_product(shop)
    good = access(codec, pid)
    stale = codec.mint_access("v", pid, int(time.time()) - 5)
    reply = await gate.get(f"/shop/{pid}", params={"token": stale}, headers=cookie(good))
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/shop/{pid}"
    assert "set-cookie" not in reply.headers  # the good cookie is kept, not overwritten


@pytest.mark.parametrize(
    ("accept_language", "lang"),
    [("ko-KR,ko;q=0.9,en;q=0.5", "ko"), ("en-US,en;q=0.9", "en"), ("fr-FR", "en"), ("", "en")],
)
async def test_the_page_speaks_the_browsers_language(
    gate: httpx.AsyncClient,
    shop: httpx.AsyncClient,
    codec: TokenCodec,
    accept_language: str,
    lang: str,
) -> None:
    pid = await new_product(shop)
    headers = {**cookie(access(codec, pid)), "Accept-Language": accept_language}
    page = await gate.get(f"/shop/{pid}", headers=headers)
    assert page.status_code == 200
    assert f'<html lang="{lang}">' in page.text


@pytest.mark.parametrize("path", ["/shop/Bad_Id", "/shop/-dash", "/shop/" + "a" * 65])
async def test_a_malformed_product_id_is_a_json_404(
    gate: httpx.AsyncClient, codec: TokenCodec, path: str
) -> None:
    assert_error(await gate.get(path), 404, "not_found")
    assert_error(await gate.get(path, params={"token": access(codec, "x")}), 404, "not_found")


async def test_tokens_are_never_logged(
    gate: httpx.AsyncClient,
    shop: httpx.AsyncClient,
    codec: TokenCodec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pid = await new_product(shop)
    token = access(codec, pid)
    expired = codec.mint_access("v", pid, int(time.time()) - 1)
    with caplog.at_level(logging.DEBUG):
        await gate.get(f"/shop/{pid}", params={"token": token})
        await gate.get(f"/shop/{pid}", params={"token": expired})
        await gate.get(f"/shop/{pid}", headers=cookie(token))
    for record in caplog.records:
        if record.name.split(".")[0] in ("httpx", "httpcore"):
            continue  # the test's own client, which logs the URLs it asks for
        text = record.getMessage() + repr(record.__dict__)
        assert token not in text and expired not in text, record


async def test_behind_a_proxy_the_public_urls_are_used(
    gate_settings: Settings, shop_url: str, codec: TokenCodec
) -> None:
    settings = gate_settings.replace(
        shop_upstream_url=shop_url,
        public_queue_url="https://line.example.com",
        public_gate_url="https://shop.example.com",
    )
    pid = "proxied-product"
    async with running(create_gate(settings)) as gate:
        assert (await gate.get(f"/shop/{pid}")).headers[
            "location"
        ] == "https://line.example.com/wait/proxied-product"
        reply = await gate.get(f"/shop/{pid}", params={"token": access(codec, pid)})
        assert reply.status_code == 303
        assert "secure" in reply.headers["set-cookie"].lower()  # https: the cookie says so


def test_settings_read_the_public_queue_url() -> None:
    env = {"FLASHSALE_PUBLIC_QUEUE_URL": "https://line.example.com"}
    settings = Settings.from_env(env, dev=True)
    assert settings.queue_url == "https://line.example.com"
    assert Settings.from_env({}, dev=True, queue_port=9001).queue_url == "http://127.0.0.1:9001"
    assert settings.to_env()["FLASHSALE_PUBLIC_QUEUE_URL"] == "https://line.example.com"
