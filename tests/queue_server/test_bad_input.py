"""Hostile and malformed requests to the queue API: the API.md error, never a 5xx."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from infra.constants import DEV_SECRET_KEY
from tests.support import new_sale
from token_gate.codec import TokenCodec

BAD_IDS = ["UPPER", "-dash-first", "a" * 65, "caf%C3%A9", "a%20b", "a_b", "..", "%2e%2e", "a.b"]


def _is_error(r: httpx.Response, status: int, code: str) -> bool:
    return r.status_code == status and r.json()["error"] == code and r.json()["detail"]


@pytest.mark.parametrize("product_id", BAD_IDS)
async def test_malformed_product_ids_are_not_found(
    client: httpx.AsyncClient, product_id: str
) -> None:
    for method, path in [
        ("POST", f"/queue/{product_id}/join"),
        ("GET", f"/queue/{product_id}/status"),
        ("DELETE", f"/queue/{product_id}/ticket"),
        ("GET", f"/queue/{product_id}"),
        ("GET", f"/wait/{product_id}"),
    ]:
        r = await client.request(method, path, headers={"Authorization": "Bearer x"})
        assert _is_error(r, 404, "not_found"), (method, path, r.status_code, r.text)


async def test_unknown_products(client: httpx.AsyncClient) -> None:
    assert _is_error(await client.post("/queue/never-created/join"), 404, "not_found")
    assert _is_error(await client.get("/queue/never-created"), 404, "not_found")
    ticket = TokenCodec((DEV_SECRET_KEY,)).mint_ticket("v", "never-created")
    r = await client.delete(
        "/queue/never-created/ticket", headers={"Authorization": f"Bearer {ticket}"}
    )
    assert _is_error(r, 404, "not_found")


async def test_garbage_tickets(client: httpx.AsyncClient, redis: Redis) -> None:
    keys = await new_sale(redis)
    path = f"/queue/{keys.product_id}/status"
    codec = TokenCodec((DEV_SECRET_KEY,))
    forged = TokenCodec(("another-secret-key-entirely",)).mint_ticket("v", keys.product_id)
    access = codec.mint_access("v", keys.product_id, 2_000_000_000)
    good = codec.mint_ticket("v", keys.product_id)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    for raw in ["x", "a.b.c", "." * 300, "\u00e9", forged, access, tampered, "x" * 5000]:
        r = await client.get(path, headers={"Authorization": f"Bearer {raw}".encode()})
        assert _is_error(r, 401, "ticket_invalid"), (raw[:40], r.text)
    for header in ["Basic abc", "Bearer", "Bearer   ", "token"]:
        r = await client.get(path, headers={"Authorization": header})
        assert _is_error(r, 401, "ticket_missing"), (header, r.text)
    # a garbage cookie on join is not an error: the caller simply gets a new place
    client.cookies.set(f"fs_ticket_{keys.product_id}", "garbage")
    joined = await client.post(f"/queue/{keys.product_id}/join")
    client.cookies.clear()
    assert joined.status_code == 201


async def test_huge_headers_and_bodies(client: httpx.AsyncClient, redis: Redis) -> None:
    keys = await new_sale(redis)
    huge = await client.get(f"/queue/{keys.product_id}", headers={"X-Junk": "j" * 20_000})
    assert _is_error(huge, 431, "headers_too_large")
    body = await client.post(f"/queue/{keys.product_id}/join", content=b"x" * 20_000)
    assert _is_error(body, 413, "payload_too_large")
    assert await redis.zcard(keys.line) == 0  # nothing was written


async def test_wrong_methods_and_unknown_paths(client: httpx.AsyncClient, redis: Redis) -> None:
    keys = await new_sale(redis)
    for method, path in [
        ("GET", f"/queue/{keys.product_id}/join"),
        ("PUT", f"/queue/{keys.product_id}/join"),
        ("POST", f"/queue/{keys.product_id}/status"),
        ("GET", f"/queue/{keys.product_id}/ticket"),
        ("DELETE", f"/queue/{keys.product_id}"),
        ("POST", "/healthz"),
    ]:
        r = await client.request(method, path)
        assert _is_error(r, 405, "method_not_allowed"), (method, path, r.text)
    assert _is_error(await client.get("/nope"), 404, "not_found")
    assert _is_error(await client.get(f"/queue/{keys.product_id}/join/extra"), 404, "not_found")


# Header values as a client can send them: any bytes but CR, LF and NUL.
header_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=300
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    segment=st.text(min_size=1, max_size=80).filter(
        lambda s: "/" not in s and s not in (".", "..")
    ),
    ticket=header_text,
    method=st.sampled_from(["GET", "POST", "DELETE", "PATCH"]),
)
async def test_no_input_gets_a_server_error(
    client: httpx.AsyncClient, segment: str, ticket: str, method: str
) -> None:
    headers = {"Authorization": f"Bearer {ticket}".encode()}
    for path in (f"/queue/{segment}/join", f"/queue/{segment}/status", f"/queue/{segment}"):
        try:
            url = httpx.URL(path)
        except httpx.InvalidURL:
            continue  # not a request any client could send
        r = await client.request(method, url, headers=headers)
        client.cookies.clear()
        assert r.status_code < 500, (path, r.text)
        assert "error" in r.json() or r.status_code in (200, 201)
