"""Bad bodies and headers on every order endpoint: the API.md error, and no write at all."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import HEADER_GATE_SECRET
from infra.sale.keys import SaleKeys
from infra.settings import Settings
from tests.orders.conftest import identity, stock_left
from tests.support import new_sale

BAD_QUANTITIES = [
    b'{"quantity": 0}',
    b'{"quantity": -1}',
    b'{"quantity": 1e9}',
    b'{"quantity": 1000000000}',
    b'{"quantity": "1"}',
    b'{"quantity": null}',
    b'{"quantity": true}',
    b'{"quantity": 1.5}',
    b'{"quantity": [1]}',
    b"{}",
    b'{"quantity": 1, "price": 1}',
    b'{"quantity": 1, "unit_price": 0, "currency": "XXX"}',
    b'{"quantity": 1, "visitor_id": "someone-else"}',
    b'{"quantity": 2}',  # over per_user_limit (1)
]
MALFORMED = [b"", b"{", b"not json", b"[1]", b'"quantity"', b"null", b"\xff\xfe"]


async def _nothing_written(redis: Redis, keys: SaleKeys, stock: int) -> None:
    assert await stock_left(redis, keys) == stock
    assert await redis.hlen(keys.orders) == 0
    assert await redis.zcard(keys.pending) == 0
    assert await redis.hlen(keys.bought) == 0


@pytest.mark.parametrize("body", BAD_QUANTITIES + MALFORMED)
async def test_bad_order_bodies_are_refused_without_a_write(
    shop: httpx.AsyncClient, redis: Redis, settings: Settings, body: bytes
) -> None:
    keys = await new_sale(redis, stock=3)
    r = await shop.post(
        f"/products/{keys.product_id}/orders",
        content=body,
        headers={**identity(settings, keys.product_id, "v"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
    await _nothing_written(redis, keys, 3)


async def test_oversized_bodies_and_keys(
    shop: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    keys = await new_sale(redis, stock=3)
    path = f"/products/{keys.product_id}/orders"
    who = identity(settings, keys.product_id, "v")
    big = await shop.post(
        path, content=b'{"quantity": 1, "x": "' + b"y" * 20_000 + b'"}', headers=who
    )
    assert (big.status_code, big.json()["error"]) == (413, "payload_too_large")
    for key in ["k" * 65, "has space", "tab\there", "é"]:
        r = await shop.post(
            path, json={"quantity": 1}, headers={**who, "Idempotency-Key": key.encode()}
        )
        assert (r.status_code, r.json()["error"]) == (422, "invalid_request"), key
    await _nothing_written(redis, keys, 3)


async def test_orders_need_the_gate(
    shop: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    keys = await new_sale(redis, stock=3)
    path = f"/products/{keys.product_id}/orders"
    who = identity(settings, keys.product_id, "v")
    around = await shop.post(path, json={"quantity": 1}, headers={**who, HEADER_GATE_SECRET: "x"})
    assert (around.status_code, around.json()["error"]) == (403, "forbidden")
    no_secret = {k: v for k, v in who.items() if k != HEADER_GATE_SECRET}
    assert (await shop.get(f"/products/{keys.product_id}", headers=no_secret)).status_code == 403
    other = identity(settings, "another-product", "v")
    wrong = await shop.post(path, json={"quantity": 1}, headers=other)
    assert (wrong.status_code, wrong.json()["error"]) == (403, "token_wrong_product")
    anonymous = {HEADER_GATE_SECRET: settings.gate_secrets()[0]}
    nobody = await shop.post(path, json={"quantity": 1}, headers=anonymous)
    assert (nobody.status_code, nobody.json()["error"]) == (401, "token_missing")
    await _nothing_written(redis, keys, 3)


async def test_pay_and_cancel_bodies_and_ids(
    shop: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    keys = await new_sale(redis, stock=3)
    pid = keys.product_id
    who = identity(settings, pid, "v")
    placed = (await shop.post(f"/products/{pid}/orders", json={"quantity": 1}, headers=who)).json()
    path = f"/products/{pid}/orders/{placed['order_id']}"
    for body in [
        b"{}",
        b'{"card": 4242424242424242}',
        b'{"card": "4242"}',
        b'{"card": "42424242424242424"}',
        b'{"card": "4242-4242-4242-4242"}',
        b'{"card": "4242424242424242", "amount": 1}',
        b"nope",
        b"[]",
    ]:
        r = await shop.post(path + "/pay", content=body, headers=who)
        assert (r.status_code, r.json()["error"]) == (422, "invalid_request"), body
    for bad_id in ["nope", "o_" + "z" * 24, "o_" + "0" * 23, "o_" + "0" * 24]:
        for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/pay")]:
            r = await shop.request(
                method,
                f"/products/{pid}/orders/{bad_id}{suffix}",
                json={"card": "4242424242424242"},
                headers=who,
            )
            assert (r.status_code, r.json()["error"]) == (404, "not_found"), (method, bad_id)
    thief = identity(settings, pid, "thief")
    for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/pay")]:
        r = await shop.request(
            method, path + suffix, json={"card": "4242424242424242"}, headers=thief
        )
        assert r.status_code == 404, (method, r.text)
    assert await stock_left(redis, keys) == 2  # only the one real order holds a unit
    wrong_method = await shop.put(path, headers=who)
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")
