"""API.md: a product id is ``^[a-z0-9][a-z0-9-]{0,63}$``, and anything else in a path is 404
``not_found``. One rule (infra.sale.keys.is_product_id), applied by every app, so that no app
passes a bad id on: asked here of every route with a ``{product_id}`` of the gate, the queue
server and the shop, by raw requests (httpx would re-encode the very bytes under test)."""

from __future__ import annotations

import time

import pytest

from infra.constants import HEADER_GATE_SECRET, HEADER_PRODUCT_ID, HEADER_VISITOR_ID
from infra.sale.keys import InvalidProductId, is_product_id, sale_keys
from infra.settings import Settings
from tests.hostile.conftest import (
    Platform,
    assert_json_error,
    exchange,
    get,
    post,
    production_server,
)
from tests.token_gate.conftest import Echo
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec
from token_gate.upstream import Upstream, UpstreamTimeout, safe_target

# Each as it stands in the request line. Control characters, a byte that is not UTF-8,
# traversal spelled three ways, an upper case letter, a "}" that would end the key's hash tag,
# one character too many, a trailing newline (which `$` alone would let through).
BAD_IDS = [
    "%00",
    "%15",
    "%0A",
    "%0D%0A",
    "a%0A",
    "%7F",
    "%FF",
    "%C3%A9",
    "..",
    "%2e%2e",
    "%2E%2E",
    ".",
    "Shoe",
    "-shoe",
    "a%7Db",
    "a%20b",
    "a" * 65,
]

# Every route with a {product_id}, as (method, path template) per app.
GATE_ROUTES = [
    ("GET", "/products/{}"),
    ("GET", "/products/{}/orders"),
    ("POST", "/products/{}/orders"),
    ("GET", "/products/{}/orders/o_0123456789abcdef01234567"),
    ("DELETE", "/products/{}/orders/o_0123456789abcdef01234567"),
    ("GET", "/shop/{}"),
]
QUEUE_ROUTES = [
    ("POST", "/queue/{}/join"),
    ("GET", "/queue/{}/status"),
    ("DELETE", "/queue/{}/ticket"),
    ("GET", "/queue/{}"),
    ("GET", "/wait/{}"),
]
SHOP_ROUTES = [  # asked with the admin key and the gate's secret: the id alone is wrong
    ("GET", "/products/{}"),
    ("POST", "/products/{}/orders"),
    ("GET", "/products/{}/orders/o_0123456789abcdef01234567"),
    ("GET", "/admin/products/{}"),
    ("POST", "/admin/sales/{}/pause"),
    ("POST", "/admin/sales/{}/resume"),
    ("GET", "/admin/sales/{}/stats"),
]


def _request(method: str, path: str, *headers: str) -> bytes:
    if method == "POST":
        return post(path, b"{}", *headers)
    return get(path, *headers).replace(b"GET ", method.encode() + b" ", 1)


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_every_route_of_every_app_refuses_a_bad_id(platform: Platform, bad: str) -> None:
    admin = f"Authorization: Bearer {platform.settings.admin_key}"
    gate_secret = f"{HEADER_GATE_SECRET}: {platform.settings.gate_secrets()[0]}"
    identity = (f"{HEADER_VISITOR_ID}: v-1", f"{HEADER_PRODUCT_ID}: {bad}")
    cases = [
        *((platform.gate, m, p) for m, p in GATE_ROUTES),
        *((platform.queue, m, p) for m, p in QUEUE_ROUTES),
        *((platform.shop, m, p) for m, p in SHOP_ROUTES),
    ]
    for address, method, template in cases:
        path = template.format(bad)
        headers = (admin, gate_secret, *identity) if address == platform.shop else (admin,)
        answer = await exchange(address, _request(method, path, *headers))
        assert answer.status == 404, (method, path, answer.status, answer.body)
        assert_json_error(answer, 404, "not_found")


async def test_traversal_and_encoded_slashes_never_reach_the_shop(
    echo: Echo, stack_settings: Settings
) -> None:
    """Behind the gate, a recording upstream; with a valid token for product "x", so that
    each request gets past the token check: none of these may arrive, by any spelling."""
    settings = stack_settings.replace(shop_upstream_url=echo.url, visitor_rate=0.0)
    token = TokenCodec(settings.secret_keys).mint_access("v-1", "x", int(time.time()) + 300)
    paths = [
        *(f"/products/{bad}" for bad in BAD_IDS),
        "/products/x/orders/..%2F..%2Fadmin%2Fproducts",
        "/products/x/orders/%2e%2e/%2e%2e/admin/products",
        "/products/x/orders/../../admin/products",
        "/products/x/%2e%2e/y/orders",
        "/products/%2e%2e/admin/products",
        "/products/x/orders/o_1%00",
        "/products/x/orders/o_1%0D%0AX-Visitor-Id:%20someone",
    ]
    async with production_server(create_gate(settings), settings) as gate:
        for path in paths:
            answer = await exchange(gate, get(path, f"Authorization: Bearer {token}"))
            assert_json_error(answer, 404, "not_found")
    assert echo.seen == []


def test_the_id_rule() -> None:
    for good in ("a", "0", "shoe-1", "a" * 64, "9-9"):
        assert is_product_id(good), good
    for bad in ("", "-a", "A", "a" * 65, "shoe-1\n", "a}b", "a{b", "..", "a/b", "é", "a\x00"):
        assert not is_product_id(bad), bad


def test_no_key_is_built_from_a_bad_id() -> None:
    """sale_keys is where a service turns an id into Redis key names: a bad one (a "}" would
    end the hash tag early and put the keys of one sale on another's shard) raises, and is
    not cached."""
    before = sale_keys.cache_info().currsize
    for bad in ("a}b", "shoe-1\n", "..", ""):
        with pytest.raises(InvalidProductId):
            sale_keys(bad)
    assert sale_keys.cache_info().currsize == before
    assert sale_keys("shoe-1") is sale_keys("shoe-1")


@pytest.mark.parametrize(
    ("target", "sent"),
    [
        ("/products/shoe-1?a=1&b=%20", "/products/shoe-1?a=1&b=%20"),
        ("/products/a b", "/products/a%20b"),
        ("/products/a\r\nX-Injected: 1", "/products/a%0D%0AX-Injected:%201"),
        ("/q?\xff\x00", "/q?%FF%00"),
        ("/q?\u20ac", "/q?%E2%82%AC"),
    ],
)
def test_the_upstream_target_is_always_one_token(target: str, sent: str) -> None:
    assert safe_target(target) == sent


def test_no_header_can_smuggle_a_line_into_the_upstream_request() -> None:
    upstream = Upstream("http://127.0.0.1:1", UpstreamTimeout(connect_s=1, read_s=1))
    headers = [
        ("accept", "application/json"),
        ("x-evil", "a\r\nX-Visitor-Id: someone"),
        ("x-nul", "a\x00b"),
        ("x-lf", "a\nb"),
        ("x-request-id", "kept"),
    ]
    wire = upstream._encode("POST", "/products/x/orders", headers, b"{}")
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /products/x/orders HTTP/1.1"
    assert b"accept: application/json" in lines and b"x-request-id: kept" in lines
    assert not any(b"someone" in line or b"\x00" in line for line in lines)
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
    assert body == b"{}"
