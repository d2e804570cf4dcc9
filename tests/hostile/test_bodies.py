"""Hostile bodies and values, through the gate into the real shop (and the admin API): each is a
JSON error with API.md's status, none writes anything (the sale's stock and orders are as they
were), and no server logs an error. Where API.md is silent (duplicate keys), the rule chosen is
JSON.parse's: the last value wins; the README says so."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.hostile.conftest import Answer, Platform, assert_json_error, exchange, get, post
from tests.support import sale_body, unique_id
from token_gate.codec import TokenCodec

# Bodies of POST /products/{id}/orders, each refused with 422 invalid_request.
BAD_ORDER_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"quantity"',
    b"{",
    b'{"quantity": 1,}',
    b'{"quantity": 0}',
    b'{"quantity": -1}',
    b'{"quantity": -0}',
    b'{"quantity": 1.0}',
    b'{"quantity": 1e0}',
    b'{"quantity": 1e309}',
    b'{"quantity": -1e309}',
    b'{"quantity": NaN}',
    b'{"quantity": Infinity}',
    b'{"quantity": true}',
    b'{"quantity": "1"}',
    b'{"quantity": null}',
    b'{"quantity": [1]}',
    b'{"quantity": {"n": 1}}',
    b'{"quantity": 100000000000000000000000000000}',
    b'{"quantity": 18446744073709551616}',
    b'{"quantity": 9223372036854775808}',
    b'{"quantity": 1000001}',
    b'{"quantity": 3}',  # over the sale's per_user_limit (2)
    b'{"quantity": 1, "price": 0}',
    b'{"quantity": 1, "visitor_id": "someone-else"}',
    b'{"quantity": 1, "quantity": 3}',  # duplicate keys: the last wins, and is over the limit
    b'{"quantity": "\xff"}',  # not UTF-8
    b'{"quantity": "\xed\xa0\x80"}',  # a lone surrogate, encoded
    b'{"quantity": "\\ud800"}',  # a lone surrogate, escaped
    b'\xef\xbb\xbf{"quantity": 1}',  # a UTF-8 byte order mark
    b'{"quantity": 1}\x00',
    b'{"quantity": 1} {"quantity": 1}',
    b'{"quantity": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # deep nesting, within 16 KiB
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
]


def _bearer(platform: Platform, product_id: str, visitor: str) -> str:
    token = TokenCodec(platform.settings.secret_keys).mint_access(
        visitor, product_id, int(time.time()) + 300
    )
    return f"Authorization: Bearer {token}"


async def _stats(platform: Platform, product_id: str) -> dict[str, object]:
    admin = f"Authorization: Bearer {platform.settings.admin_key}"
    answer = await exchange(platform.shop, get(f"/admin/sales/{product_id}/stats", admin))
    assert answer.status == 200, answer.body
    return dict(answer.json())


async def _order(platform: Platform, product_id: str, body: bytes, *headers: str) -> Answer:
    return await exchange(
        platform.gate,
        post(f"/products/{product_id}/orders", body, "Content-Type: application/json", *headers),
    )


async def test_bad_order_bodies_are_422_and_write_nothing(
    platform: Platform, product_id: str
) -> None:
    before = await _stats(platform, product_id)
    for body in BAD_ORDER_BODIES:
        bearer = _bearer(platform, product_id, unique_id("v"))
        answer = await _order(platform, product_id, body, bearer)
        assert answer.status == 422, (body[:60], answer.status, answer.body)
        assert_json_error(answer, 422, "invalid_request")
    assert await _stats(platform, product_id) == before


async def test_duplicate_keys_take_the_last_value(platform: Platform, product_id: str) -> None:
    """The half of the rule that is accepted: {"quantity": 3, "quantity": 1} orders 1."""
    bearer = _bearer(platform, product_id, unique_id("v"))
    answer = await _order(platform, product_id, b'{"quantity": 3, "quantity": 1}', bearer)
    assert answer.status == 202, answer.body
    assert answer.json()["quantity"] == 1


@pytest.mark.parametrize(
    "key",
    [
        "k" * 65,  # over API.md's 64
        "caf\xe9",  # latin-1 byte: not visible ASCII
        "\xc3\xa9t\xc3\xa9",  # UTF-8 bytes
        "a b",
    ],
)
async def test_a_bad_idempotency_key_is_422_and_writes_nothing(
    platform: Platform, product_id: str, key: str
) -> None:
    before = await _stats(platform, product_id)
    bearer = _bearer(platform, product_id, unique_id("v"))
    idem = f"Idempotency-Key: {key}"
    answer = await _order(platform, product_id, b'{"quantity": 1}', bearer, idem)
    assert_json_error(answer, 422, "invalid_request")
    assert await _stats(platform, product_id) == before


@pytest.mark.parametrize(
    "change",
    [
        {"price": 1e309},
        {"price": float("nan")},
        {"price": -1},
        {"price": 12.5},
        {"price": True},
        {"price": 2**64},
        {"stock": 2**63},
        {"stock": -1},
        {"stock": "100"},
        {"batch_size": 0},
        {"interval_s": -1.0},
        {"interval_s": 1e308},
        {"overbook": float("inf")},
        {"per_user_limit": True},
        {"sale_start": "not a date"},
        {"sale_start": "9999-99-99T00:00:00Z"},
        {"sale_start": 1700000000},
        {"currency": "\u20ac\u20ac\u20ac"},
        {"currency": "EU\x00"},
        {"name": "x" * 20_000},
        {"name": "\ud800"},
        {"queue_mode": "random"},
        {"unknown_field": 1},
    ],
)
async def test_bad_admin_fields_are_refused_and_create_nothing(
    platform: Platform, change: dict[str, object]
) -> None:
    body = sale_body(**change)
    try:
        raw = orjson.dumps(body)
    except TypeError:  # NaN/inf/lone surrogates: orjson refuses them, so send them raw
        import json

        raw = json.dumps(body).encode("utf-8", "surrogatepass")
    admin = f"Authorization: Bearer {platform.settings.admin_key}"
    answer = await exchange(platform.shop, post("/admin/products", raw, admin))
    assert answer.status in (413, 422), (change, answer.status, answer.body)
    assert answer.json()["error"] in ("invalid_request", "payload_too_large"), answer.body
    created = await exchange(platform.shop, get(f"/admin/products/{body['id']}", admin))
    assert_json_error(created, 404, "not_found")
