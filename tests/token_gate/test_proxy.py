"""What crosses the gate as it came: request ids, repeated headers, bodies within the limit."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from infra.settings import Settings
from tests.shop.helpers import assert_error
from tests.support import running, unique_id
from tests.token_gate.conftest import Echo, bearer, serving
from tests.token_gate.upstreams import serving_upstream
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

HEX_ID = re.compile(r"[0-9a-f]{32}")


def auth(codec: TokenCodec, product_id: str = "shoe-1") -> dict[str, str]:
    visitor = unique_id("v")
    return bearer(codec.mint_access(visitor, product_id, int(time.time()) + 300))


# --- X-Request-Id ---------------------------------------------------------------------------------


async def test_request_id_is_generated_and_sent_both_ways(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec
) -> None:
    first = await echo_gate.post("/products/shoe-1/orders", headers=auth(codec), json={})
    second = await echo_gate.get("/products")
    assert first.status_code == second.status_code == 299
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(HEX_ID.fullmatch(rid) for rid in ids), ids
    assert ids[0] != ids[1]
    assert [echo.header(i, "x-request-id") for i in range(2)] == [[ids[0]], [ids[1]]]


@pytest.mark.parametrize("rid", ["req-123", "a" * 128, "!~#%&'*+./:;<=>?@[]^_`{|}"])
async def test_a_clients_request_id_is_kept(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec, rid: str
) -> None:
    reply = await echo_gate.get(
        "/products/shoe-1/orders/o-1", headers={**auth(codec), "X-Request-Id": rid}
    )
    assert reply.status_code == 299
    assert reply.headers.get_list("x-request-id") == [rid]
    assert echo.header(0, "x-request-id") == [rid]


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Request-Id", "a" * 129)],
        [("X-Request-Id", "has space")],
        [("X-Request-Id", "tab\there")],
        [("X-Request-Id", "")],
        [("X-Request-Id", "caf\u00e9")],
        [("X-Request-Id", "one"), ("X-Request-Id", "two")],
    ],
)
async def test_an_unusable_request_id_is_replaced(
    echo_gate: httpx.AsyncClient, echo: Echo, headers: list[tuple[str, str]]
) -> None:
    reply = await echo_gate.get("/products", headers=[(k, v.encode("latin-1")) for k, v in headers])
    assert reply.status_code == 299
    [rid] = reply.headers.get_list("x-request-id")
    assert HEX_ID.fullmatch(rid)
    assert echo.header(0, "x-request-id") == [rid]


async def test_gate_errors_carry_a_request_id(
    echo_gate: httpx.AsyncClient, echo: Echo, codec: TokenCodec
) -> None:
    replies = [
        (await echo_gate.post("/products/shoe-1/orders"), 401),
        (await echo_gate.get("/nope"), 404),
        (await echo_gate.post("/products"), 405),
        (await echo_gate.post("/products/shoe-1/orders", content=b"x" * 20_000), 413),
        (await echo_gate.get("/products", headers={"x-pad": "a" * 9000}), 431),
    ]
    for reply, status in replies:
        assert reply.status_code == status
        assert HEX_ID.fullmatch(reply.headers["x-request-id"]), status
    kept = await echo_gate.get("/nope", headers={"X-Request-Id": "trace-me"})
    assert kept.headers["x-request-id"] == "trace-me"
    assert echo.seen == []


# --- headers, repeated ----------------------------------------------------------------------------


async def test_repeated_response_headers_stay_apart(gate_settings: Settings) -> None:
    async with serving_upstream() as upstream:
        app = create_gate(gate_settings.replace(shop_upstream_url=upstream.url))
        async with running(app) as gate:
            reply = await gate.get("/products/cookie-jar")
    assert reply.status_code == 200
    cookies = reply.headers.get_list("set-cookie")
    assert len(cookies) == 2, cookies
    assert cookies[0].startswith("first=1;") and "HttpOnly" in cookies[0]
    assert cookies[1].startswith("second=2;") and "Path=/products" in cookies[1]
    assert reply.headers.get_list("x-multi") == ["one", "two"]
    assert reply.json() == {"hits": 1}
    assert reply.headers.get_list("content-length") == [str(len(reply.content))]


async def test_repeated_request_headers_and_query_values_reach_the_shop(
    echo_gate: httpx.AsyncClient, echo: Echo
) -> None:
    headers = [("x-tag", "one"), ("x-tag", "two"), ("accept-encoding", "gzip")]
    reply = await echo_gate.get("/products?tag=a&tag=b&q=%20x", headers=headers)
    assert reply.status_code == 299
    assert echo.header(0, "x-tag") == ["one", "two"]
    assert echo.header(0, "accept-encoding") == ["gzip"]
    assert echo.seen[0].query == "tag=a&tag=b&q=%20x"


async def test_hop_by_hop_headers_do_not_cross(echo_gate: httpx.AsyncClient, echo: Echo) -> None:
    headers = {"Connection": "keep-alive, x-secret-hop", "X-Secret-Hop": "1", "TE": "trailers"}
    assert (await echo_gate.get("/products", headers=headers)).status_code == 299
    # Connection itself is the upstream client's own, for its own hop (HTTP/1.1 keeps the
    # connection alive without saying so): nothing of the client's value crosses.
    assert echo.header(0, "connection") in ([], ["keep-alive"])
    assert echo.header(0, "x-secret-hop") == []
    assert echo.header(0, "te") == []


async def test_head_keeps_the_shops_length(echo_gate: httpx.AsyncClient) -> None:
    got = await echo_gate.get("/products/shoe-1")
    head = await echo_gate.head("/products/shoe-1")
    assert head.status_code == 299
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] != "0"


# --- bodies ---------------------------------------------------------------------------------------


@pytest.fixture
async def gate_url(gate_settings: Settings, echo: Echo) -> AsyncIterator[str]:
    """The gate under a real uvicorn, so that a chunked body arrives as real HTTP chunks."""
    async with serving(create_gate(gate_settings.replace(shop_upstream_url=echo.url))) as url:
        yield url


async def chunks(total: int, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def test_chunked_body_over_16_kib_is_cut_off(
    gate_url: str, echo: Echo, codec: TokenCodec
) -> None:
    async with httpx.AsyncClient(base_url=gate_url) as client:
        reply = await client.post(
            "/products/shoe-1/orders", headers=auth(codec), content=chunks(20_000)
        )
        assert_error(reply, 413, "payload_too_large")
        assert "content-length" not in reply.request.headers  # it really was chunked
        assert reply.request.headers["transfer-encoding"] == "chunked"
        assert HEX_ID.fullmatch(reply.headers["x-request-id"])
        assert echo.seen == []


async def test_chunked_body_within_the_limit_arrives_whole(
    gate_url: str, echo: Echo, codec: TokenCodec
) -> None:
    async with httpx.AsyncClient(base_url=gate_url) as client:
        reply = await client.post(
            "/products/shoe-1/orders", headers=auth(codec), content=chunks(16 * 1024)
        )
    assert reply.status_code == 299, reply.text
    [seen] = echo.seen
    assert seen.body == b"x" * 16 * 1024
    assert echo.header(0, "content-length") == [str(16 * 1024)]
    assert echo.header(0, "transfer-encoding") == []
