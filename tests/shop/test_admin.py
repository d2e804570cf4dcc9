"""The admin API of API.md against the real shop app, Valkey and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from shop.catalog import DEFAULTS, REQUIRED
from tests.shop.conftest import CreateProduct
from tests.shop.helpers import (
    ADMIN,
    PRODUCT_KEYS,
    assert_error,
    assert_not_written,
)
from tests.support import iso_in, sale_body, unique_id

API_DEFAULTS = {
    "sale_end": None,
    "prequeue_s": 900,
    "queue_mode": "shuffle_prequeue",
    "batch_size": 100,
    "interval_s": 1.0,
    "max_active": 0,
    "token_ttl_s": 600,
    "per_user_limit": 1,
    "hold_s": 600,
    "abandon_s": 300,
    "pickup_s": 60,
    "overbook": 1.5,
}


def minimal_body(**overrides: Any) -> dict[str, Any]:
    full = sale_body()
    body = {name: full[name] for name in REQUIRED}
    body.update(overrides)
    return body


async def test_create_returns_the_product_with_defaults(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    body = minimal_body(sale_start="2031-01-02T03:04:05+02:00")
    reply = await client.post("/admin/products", json=body, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    product = reply.json()
    assert PRODUCT_KEYS <= set(product)
    assert product["id"] == body["id"]
    assert product["name"] == body["name"]
    assert product["price"] == body["price"]
    assert product["currency"] == "EUR"
    assert product["stock_total"] == product["stock_left"] == body["stock"]
    assert product["sale_start"] == "2031-01-02T01:04:05.000Z"
    assert product["state"] == "scheduled"
    assert API_DEFAULTS.keys() == DEFAULTS.keys()
    for name, default in API_DEFAULTS.items():
        assert product[name] == default, name
    assert "seed" not in product and "commitment" not in product
    assert await redis.sismember(SALES_KEY, body["id"])
    assert await redis.get(SaleKeys(body["id"]).stock) == str(body["stock"])

    public = await client.get(f"/products/{body['id']}")
    assert public.status_code == 200
    assert public.json() == {k: product[k] for k in PRODUCT_KEYS}


async def test_create_echoes_every_optional_field(client: httpx.AsyncClient) -> None:
    chosen = {
        "sale_end": "2031-01-03T00:00:00Z",
        "prequeue_s": 60.5,
        "queue_mode": "fifo",
        "batch_size": 7,
        "interval_s": 0.25,
        "max_active": 30,
        "token_ttl_s": 120,
        "per_user_limit": 3,
        "hold_s": 90,
        "abandon_s": 45,
        "pickup_s": 15,
        "overbook": 1.0,
    }
    body = minimal_body(sale_start="2031-01-02T00:00:00", **chosen)
    reply = await client.post("/admin/products", json=body, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    product = reply.json()
    assert product["sale_start"] == "2031-01-02T00:00:00.000Z"  # no zone: UTC
    assert product["sale_end"] == "2031-01-03T00:00:00.000Z"
    for name, value in chosen.items():
        if name != "sale_end":
            assert product[name] == value, name


async def test_past_start_is_accepted(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/admin/products", json=sale_body(sale_start=iso_in(-3600)), headers=ADMIN
    )
    assert reply.status_code == 201, reply.text
    # API.md: "sale_start may be in the past: the sale is then open at once."
    assert reply.json()["state"] == "open"


async def test_taken_id_is_409_and_keeps_the_first(
    client: httpx.AsyncClient, create_product: CreateProduct
) -> None:
    first = await create_product(name="First")
    again = sale_body(id=first["id"], name="Second", stock=5)
    assert_error(await client.post("/admin/products", json=again, headers=ADMIN), 409, "exists")
    kept = (await client.get(f"/products/{first['id']}")).json()
    assert kept["name"] == "First"
    assert kept["stock_total"] == kept["stock_left"] == first["stock_total"]


BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": f"Basic {ADMIN['Authorization'].split()[1]}"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": ADMIN["Authorization"] + "x"},
    {"Authorization": ADMIN["Authorization"][:-1]},
    {"Authorization": ADMIN["Authorization"].split()[1]},
]


@pytest.mark.parametrize("headers", BAD_AUTH)
async def test_admin_routes_need_the_key(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct, headers: dict
) -> None:
    body = sale_body()
    assert_error(
        await client.post("/admin/products", json=body, headers=headers), 401, "unauthorized"
    )
    await assert_not_written(redis, body["id"])
    product = await create_product()
    pid = product["id"]
    before = await redis.hgetall(SaleKeys(pid).sale)
    patch = await client.patch(f"/admin/products/{pid}", json={"name": "pwned"}, headers=headers)
    assert_error(patch, 401, "unauthorized")
    for action in ("pause", "resume"):
        assert_error(
            await client.post(f"/admin/sales/{pid}/{action}", headers=headers), 401, "unauthorized"
        )
    assert await redis.hgetall(SaleKeys(pid).sale) == before


INVALID_FIELDS: list[tuple[str, Any]] = [
    *[("id", v) for v in ["", "-a", "Abc", "a_b", "a b", "a/b", "é", "a" * 65, "ab\n", 7, None]],
    *[("name", v) for v in ["", "x" * 201, "a\nb", "tab\there", "\x00", 5, None, ["n"]]],
    *[("price", v) for v in ["100", 1.5, 100.0, True, -1, 10**12 + 1, 2**64 - 1, None, {}]],
    *[("currency", v) for v in ["eur", "EURO", "EU", "", "EUR\n", 978, None]],
    *[("stock", v) for v in [-1, 10**9 + 1, 1.0, True, "5", None]],
    *[("sale_start", v) for v in ["tomorrow", "", "2030-13-01T00:00:00Z", 1700000000, None]],
    ("sale_start", "2030-01-01T00:00:00" + " " * 40),
    ("sale_start", "0001-01-01T00:00:00+14:00"),
    ("sale_start", "9999-12-31T23:59:59-14:00"),
    # A fixed past end (before any start the test uses): ids must not change between
    # collections (pytest-xdist compares them).
    *[("sale_end", v) for v in ["nope", 5, True, "2000-01-01T00:00:00Z"]],
    *[("prequeue_s", v) for v in [-1, -0.5, 7 * 86400 + 1, "900", True, None]],
    *[("queue_mode", v) for v in ["lifo", "FIFO", "", None, 1]],
    *[("batch_size", v) for v in [0, 100_001, 1.5, True]],
    *[("interval_s", v) for v in [0, 0.01, 3601, "1", True, None]],
    *[("max_active", v) for v in [-1, True, 1.5]],
    *[("token_ttl_s", v) for v in [9, 86_401, 60.5]],
    *[("per_user_limit", v) for v in [0, 1001, True]],
    *[("hold_s", v) for v in [9, 86_401, "600"]],
    ("abandon_s", 9),
    ("pickup_s", 4),
    *[("overbook", v) for v in [0.99, 10.01, 1e308, "1.5", True, None]],
    *[(name, "x") for name in ("colour", "stock_left", "opened", "seed", "paused", "")],
]


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS)
async def test_invalid_field_is_422_and_writes_nothing(
    client: httpx.AsyncClient, redis: Redis, field: str, value: Any
) -> None:
    body = sale_body(**{"sale_start": iso_in(-3600), field: value})
    reply = await client.post("/admin/products", json=body, headers=ADMIN)
    assert_error(reply, 422, "invalid_request")
    await assert_not_written(redis, body["id"])


@pytest.mark.parametrize("field", REQUIRED)
async def test_missing_required_field(client: httpx.AsyncClient, redis: Redis, field: str) -> None:
    body = minimal_body()
    del body[field]
    assert_error(
        await client.post("/admin/products", json=body, headers=ADMIN), 422, "invalid_request"
    )
    await assert_not_written(redis, body.get("id"))


@pytest.mark.parametrize(
    "sale_end",
    ["2031-01-01T00:01:00+00:01", "2031-01-01T00:00:59+00:01", "2030-12-31T23:59:59Z"],
)
async def test_sale_end_not_after_start(
    client: httpx.AsyncClient, redis: Redis, sale_end: str
) -> None:
    body = sale_body(sale_start="2031-01-01T00:00:00Z", sale_end=sale_end)
    reply = await client.post("/admin/products", json=body, headers=ADMIN)
    assert_error(reply, 422, "invalid_request")
    await assert_not_written(redis, body["id"])


def raw_body(pid: str, price: str) -> bytes:
    return (
        f'{{"id": "{pid}", "name": "n", "price": {price}, "currency": "EUR", '
        f'"stock": 1, "sale_start": "2031-01-01T00:00:00Z"}}'
    ).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"nan",
        b"{'id': 'x'}",
        b"\xff\xfe{}",
        b'{"a": 1}{',
        b"[" * 2000 + b"]" * 2000,
        *(raw_body("__id__", n) for n in ("NaN", "Infinity", "1e309", "-1e309", "0x10")),
    ],
)
async def test_malformed_json_is_422(client: httpx.AsyncClient, redis: Redis, raw: bytes) -> None:
    pid = unique_id()
    raw = raw.replace(b"__id__", pid.encode())
    reply = await client.post("/admin/products", content=raw, headers=ADMIN)
    assert_error(reply, 422, "invalid_request")
    await assert_not_written(redis, pid)


async def test_huge_integer_is_422(client: httpx.AsyncClient, redis: Redis) -> None:
    pid = unique_id()
    raw = raw_body(pid, "123456789012345678901234567890")
    assert_error(
        await client.post("/admin/products", content=raw, headers=ADMIN), 422, "invalid_request"
    )
    await assert_not_written(redis, pid)


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b'"x"', b"null", b"42", b"true"])
async def test_non_object_json_is_422(client: httpx.AsyncClient, raw: bytes) -> None:
    reply = await client.post("/admin/products", content=raw, headers=ADMIN)
    assert_error(reply, 422, "invalid_request")


async def test_oversized_body_is_413(client: httpx.AsyncClient, redis: Redis) -> None:
    body = sale_body(name="x" * 20_000)
    raw = orjson.dumps(body)
    reply = await client.post("/admin/products", content=raw, headers=ADMIN)
    assert_error(reply, 413, "payload_too_large")
    await assert_not_written(redis, body["id"])

    async def chunks():  # no Content-Length: counted as it streams
        for i in range(0, len(raw), 1024):
            yield raw[i : i + 1024]

    reply = await client.post("/admin/products", content=chunks(), headers=ADMIN)
    assert_error(reply, 413, "payload_too_large")
    await assert_not_written(redis, body["id"])
