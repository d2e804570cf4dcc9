"""The token gate in front of a real shop (uvicorn on a loopback port) or a recording echo app."""

from __future__ import annotations

import time

import httpx
import pytest

from infra.constants import ACCESS_COOKIE
from infra.settings import Settings
from tests.shop.helpers import ADMIN, assert_error
from tests.support import running, sale_body, unique_id
from tests.token_gate.conftest import Echo, bearer, free_port, serving_shop
from tests.token_gate.upstreams import metric
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

OTHER_SECRET = "another-deployment-secret-0000000000"


def valid(codec: TokenCodec, product_id: str = "shoe-1", visitor: str = "") -> str:
    # A new visitor by default: each has a rate-limit bucket of its own in the shared Redis.
    visitor = visitor or unique_id("v")
    return codec.mint_access(visitor, product_id, int(time.time()) + 300, token_id="tok-1")


def shop_counter(metrics: str, method: str, status: int) -> float:
    return metric(metrics, "flashsale_shop_http_requests_total", method=method, status=str(status))


# --- catalog reads pass without a token ---------------------------------------------------------


async def test_catalog_is_proxied_without_a_token(
    gate: httpx.AsyncClient, shop: httpx.AsyncClient
) -> None:
    body = sale_body(id=unique_id("0gate"))
    assert (await shop.post("/admin/products", json=body, headers=ADMIN)).status_code == 201
    direct = await shop.get(f"/products/{body['id']}")
    through = await gate.get(f"/products/{body['id']}")
    assert through.status_code == 200
    assert through.headers["content-type"].startswith("application/json")
    assert through.json() == direct.json()
    assert through.json()["id"] == body["id"]

    listed = await gate.get("/products")
    assert listed.status_code == 200
    assert body["id"] in {product["id"] for product in listed.json()}

    assert_error(await gate.get("/products/no-such-product-g1"), 404, "not_found")


async def test_admin_api_is_not_reachable_through_the_gate(
    gate: httpx.AsyncClient, shop: httpx.AsyncClient
) -> None:
    body = sale_body()
    reply = await gate.post("/admin/products", json=body, headers=ADMIN)
    assert_error(reply, 404, "not_found")
    assert (await shop.get(f"/products/{body['id']}")).status_code == 404


# --- every token attack is answered by the gate itself --------------------------------------------


def attacks(codec: TokenCodec) -> list[tuple[dict[str, str], dict[str, str], int, str]]:
    """(headers, cookies, status, code) for requests on /products/shoe-1/orders."""
    now = int(time.time())
    forged = TokenCodec((OTHER_SECRET,)).mint_access("v", "shoe-1", now + 300)
    ticket = codec.mint_ticket("v", "shoe-1")
    expired = codec.mint_access("v", "shoe-1", now - 1)
    other = codec.mint_access("v", "other-shoe", now + 300)
    good = valid(codec)
    return [
        ({}, {}, 401, "token_missing"),
        ({"Authorization": "Bearer"}, {}, 401, "token_missing"),
        ({"Authorization": "Bearer    "}, {}, 401, "token_missing"),
        ({"Authorization": f"Basic {good}"}, {}, 401, "token_missing"),
        ({"Authorization": good}, {}, 401, "token_missing"),
        (bearer("garbage"), {}, 401, "token_invalid"),
        (bearer("a.b.c"), {}, 401, "token_invalid"),
        (bearer("x" * 5000), {}, 401, "token_invalid"),
        (bearer(good[:-2]), {}, 401, "token_invalid"),
        (bearer(forged), {}, 401, "token_invalid"),
        (bearer(ticket), {}, 401, "token_invalid"),
        (bearer(expired), {}, 401, "token_expired"),
        (bearer(other), {}, 403, "token_wrong_product"),
        ({}, {ACCESS_COOKIE: "garbage"}, 401, "token_invalid"),
        ({}, {ACCESS_COOKIE: ticket}, 401, "token_invalid"),
        ({}, {ACCESS_COOKIE: expired}, 401, "token_expired"),
        ({}, {ACCESS_COOKIE: other}, 403, "token_wrong_product"),
        ({}, {"fs_ticket_shoe-1": ticket}, 401, "token_missing"),
        # A bad bearer is not rescued by a good cookie.
        (bearer(forged), {ACCESS_COOKIE: good}, 401, "token_invalid"),
    ]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/orders", "/orders/ord-1", "/orders/ord-1/pay"])
async def test_token_attacks_never_reach_the_upstream(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec, method: str, path: str
) -> None:
    for headers, cookies, status, code in attacks(codec):
        echo_gate.cookies.clear()
        echo_gate.cookies.update(cookies)
        reply = await echo_gate.request(
            method, f"/products/shoe-1{path}", headers=headers, content=b'{"quantity": 1}'
        )
        assert_error(reply, status, code)
    assert echo.seen == []


@pytest.mark.parametrize("product", ["UPPER", "a_b", "a" * 65, "ab%0A"])
async def test_bad_product_id_in_an_order_path_is_404(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec, product: str
) -> None:
    token = valid(codec, product_id=product.replace("%0A", "\n"))
    assert_error(
        await echo_gate.post(f"/products/{product}/orders", headers=bearer(token)), 404, "not_found"
    )
    assert echo.seen == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/orders"), ("GET", f"/orders/o_{'0' * 24}"), ("DELETE", f"/orders/o_{'0' * 24}")],
)
async def test_valid_token_reaches_the_shop(
    gate: httpx.AsyncClient, shop: httpx.AsyncClient, codec: TokenCodec, method: str, path: str
) -> None:
    pid = unique_id()  # no such sale: the shop itself answers 404
    before = (await shop.get("/metrics")).text
    reply = await gate.request(
        method,
        f"/products/{pid}{path}",
        content=b'{"quantity": 1}' if method == "POST" else b"",
        headers={**bearer(valid(codec, pid)), "content-type": "application/json"},
    )
    assert_error(reply, 404, "not_found")
    after = (await shop.get("/metrics")).text
    # The shop counted exactly this request: the answer is the shop's, not the gate's.
    assert shop_counter(after, method, 404) == shop_counter(before, method, 404) + 1


@pytest.mark.parametrize(
    "path",
    [
        "/products/shoe-1/orders/%2E%2E/%2E%2E/other-shoe/orders",
        "/products/shoe-1/orders/%2e%2e/%2e%2e/%2e%2e/admin/dlq",
        "/products/shoe-1/orders/..%2F..%2F..%2Fadmin%2Fproducts",
        "/products/shoe-1/orders/%2E/o_1",
        "/products/%2E%2E",
    ],
)
async def test_dot_segments_cannot_leave_the_checked_path(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec, path: str
) -> None:
    # The upstream client resolves `..`: the shop would get another path than the gate checked.
    reply = await echo_gate.get(path, headers=bearer(valid(codec)))
    assert_error(reply, 404, "not_found")
    assert echo.seen == []


async def test_valid_cookie_passes(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec
) -> None:
    echo_gate.cookies.set(ACCESS_COOKIE, valid(codec, visitor="cookie-visitor"))
    reply = await echo_gate.get("/products/shoe-1/orders/ord-9")
    assert reply.status_code == 299, reply.text
    assert reply.json() == {"echo": True, "path": "/products/shoe-1/orders/ord-9"}
    assert echo.header(0, "x-visitor-id") == ["cookie-visitor"]


# --- what reaches the upstream --------------------------------------------------------------------


async def test_identity_headers_come_from_the_token_only(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec, gate_settings: Settings
) -> None:
    forged = [
        ("X-Visitor-Id", "attacker"),
        ("x-visitor-id", "attacker-2"),
        ("X-PRODUCT-ID", "other-shoe"),
        ("X-Token-Id", "stolen"),
        ("X-Flashsale-Gate", "forged"),
        ("Authorization", f"Bearer {valid(codec, visitor='real-visitor')}"),
        ("X-Request-Id", "req-123"),
    ]
    reply = await echo_gate.post(
        "/products/shoe-1/orders?dry=1", headers=forged, content=b'{"quantity": 2}'
    )
    assert reply.status_code == 299, reply.text
    [seen] = echo.seen
    assert (seen.method, seen.path, seen.query) == ("POST", "/products/shoe-1/orders", "dry=1")
    assert seen.body == b'{"quantity": 2}'
    assert echo.header(0, "x-visitor-id") == ["real-visitor"]
    assert echo.header(0, "x-product-id") == ["shoe-1"]
    assert echo.header(0, "x-token-id") == ["tok-1"]
    assert echo.header(0, "x-flashsale-gate") == [gate_settings.gate_secrets()[0]]
    assert echo.header(0, "x-request-id") == ["req-123"]


async def test_public_routes_strip_identity_headers(
    echo_gate: httpx.AsyncClient, echo: Echo, gate_settings: Settings
) -> None:
    headers = {
        "X-Visitor-Id": "attacker",
        "X-Product-Id": "shoe-1",
        "X-Token-Id": "t",
        "X-Flashsale-Gate": "forged",
        "X-Request-Id": "req-public",
    }
    for path in ("/products", "/products/shoe-1"):
        assert (await echo_gate.get(path, headers=headers)).status_code == 299
    assert [seen.path for seen in echo.seen] == ["/products", "/products/shoe-1"]
    for i in range(2):
        for name in ("x-visitor-id", "x-product-id", "x-token-id"):
            assert echo.header(i, name) == [], name
        assert echo.header(i, "x-flashsale-gate") == [gate_settings.gate_secrets()[0]]
        assert echo.header(i, "x-request-id") == ["req-public"]


# --- the gate's own edges -------------------------------------------------------------------------


async def test_gate_edges(echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec) -> None:
    headers = bearer(valid(codec))
    assert_error(
        await echo_gate.patch("/products/shoe-1/orders", headers=headers), 405, "method_not_allowed"
    )
    assert_error(await echo_gate.post("/products"), 405, "method_not_allowed")
    assert_error(await echo_gate.get("/nope"), 404, "not_found")
    assert_error(await echo_gate.get("/admin/dlq", headers=ADMIN), 404, "not_found")
    big = {**headers, "x-padding": "a" * 9000}
    assert_error(
        await echo_gate.post("/products/shoe-1/orders", headers=big), 431, "headers_too_large"
    )
    huge = b"x" * 20_000
    reply = await echo_gate.post("/products/shoe-1/orders", headers=headers, content=huge)
    assert_error(reply, 413, "payload_too_large")
    assert echo.seen == []
    metrics = await echo_gate.get("/metrics")
    assert metrics.status_code == 200
    assert "flashsale_gate_http_requests_total" in metrics.text


async def test_gate_health_follows_the_shop(gate: httpx.AsyncClient) -> None:
    reply = await gate.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


async def test_gate_health_is_503_when_the_shop_is_unhealthy(
    gate_settings: Settings, shop_settings: Settings
) -> None:
    broken = shop_settings.replace(database_url="postgresql+asyncpg://x@127.0.0.1:9/x")
    async with serving_shop(broken) as url:
        async with running(create_gate(gate_settings.replace(shop_upstream_url=url))) as gate:
            reply = await gate.get("/healthz")
            assert_error(reply, 503, "upstream_unavailable")
            assert reply.headers["retry-after"]


async def test_shop_down_is_503(gate_settings: Settings, codec: TokenCodec) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with running(create_gate(gate_settings.replace(shop_upstream_url=nowhere))) as gate:
        for reply in (
            await gate.get("/products"),
            await gate.get("/products/shoe-1"),
            await gate.post("/products/shoe-1/orders", headers=bearer(valid(codec)), json={}),
            await gate.get("/healthz"),
        ):
            assert_error(reply, 503, "upstream_unavailable")
            assert int(reply.headers["retry-after"]) >= 1
        # Token checks still come first: a bad token is refused even with the shop down.
        assert_error(await gate.post("/products/shoe-1/orders"), 401, "token_missing")
