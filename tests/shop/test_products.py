"""The public catalog and the HTTP edges of the shop: states, listing, 404/405/431, health."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import HEADER_GATE_SECRET, SALES_KEY
from infra.sale.keys import SaleKeys
from infra.settings import Settings
from shop.app import create_app
from tests.shop.conftest import CreateProduct
from tests.shop.helpers import ADMIN, PRODUCT_KEYS, assert_error, mark_opened
from tests.support import iso_in, running, unique_id


async def get_product(client: httpx.AsyncClient, product_id: str) -> dict[str, Any]:
    reply = await client.get(f"/products/{product_id}")
    assert reply.status_code == 200, reply.text
    product = reply.json()
    assert set(product) == PRODUCT_KEYS  # no admin config, seed or commitment leaks out
    return product


async def test_get_product_shape(client: httpx.AsyncClient, create_product: CreateProduct) -> None:
    created = await create_product(
        name="Air Max", price=15_999, currency="USD", stock=42, sale_start="2031-05-06T07:08:09Z"
    )
    product = await get_product(client, created["id"])
    assert product == {
        "id": created["id"],
        "name": "Air Max",
        "price": 15_999,
        "currency": "USD",
        "stock_total": 42,
        "stock_left": 42,
        "sale_start": "2031-05-06T07:08:09.000Z",
        "state": "scheduled",
        "per_user_limit": 1,
    }
    assert isinstance(product["price"], int)


async def test_list_products(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct
) -> None:
    # Ids that sort first, so they are listed even in a store holding many other sales.
    ids = [(await create_product(id=unique_id("0"), name=f"Item {i}"))["id"] for i in range(3)]
    await mark_opened(redis, ids[1])
    reply = await client.get("/products")
    assert reply.status_code == 200
    listed = reply.json()
    assert isinstance(listed, list)
    by_id = {product["id"]: product for product in listed}
    assert set(ids) <= set(by_id)
    assert [p["id"] for p in listed] == sorted(p["id"] for p in listed)
    for i, pid in enumerate(ids):
        assert set(by_id[pid]) == PRODUCT_KEYS
        assert by_id[pid]["name"] == f"Item {i}"
        assert by_id[pid] == await get_product(client, pid)
    assert by_id[ids[1]]["state"] == "open"


async def test_index_entry_without_a_sale_is_skipped(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    ghost = unique_id("0ghost")
    await redis.sadd(SALES_KEY, ghost)
    try:
        reply = await client.get("/products")
        assert reply.status_code == 200
        assert ghost not in {product["id"] for product in reply.json()}
        assert_error(await client.get(f"/products/{ghost}"), 404, "not_found")
    finally:
        await redis.srem(SALES_KEY, ghost)


# --- states ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "opened", "state"),
    [
        ({"sale_start": iso_in(3600), "prequeue_s": 60}, False, "scheduled"),
        ({"sale_start": iso_in(3600), "prequeue_s": 7200}, False, "prequeue"),
        ({"sale_start": iso_in(3600), "prequeue_s": 0}, False, "scheduled"),
        ({"sale_start": iso_in(-60)}, False, "prequeue"),  # started, not yet opened
        ({"sale_start": iso_in(-60)}, True, "open"),
        ({"sale_start": iso_in(-60), "sale_end": iso_in(3600)}, True, "open"),
        ({"sale_start": iso_in(-60), "stock": 0}, True, "sold_out"),
        ({"sale_start": iso_in(-60), "stock": 0}, False, "prequeue"),
        ({"sale_start": iso_in(-60), "sale_end": iso_in(-30)}, True, "closed"),
        ({"sale_start": iso_in(-60), "sale_end": iso_in(-30)}, False, "closed"),
        ({"sale_start": iso_in(-60), "sale_end": iso_in(-30), "stock": 0}, True, "closed"),
    ],
)
async def test_state(
    client: httpx.AsyncClient,
    redis: Redis,
    create_product: CreateProduct,
    overrides: dict[str, Any],
    opened: bool,
    state: str,
) -> None:
    pid = (await create_product(**overrides))["id"]
    # A sale created after its start opens at once; these cases want the scheduler's say.
    await redis.hset(SaleKeys(pid).sale, "opened", "1" if opened else "0")
    assert (await get_product(client, pid))["state"] == state


async def test_state_follows_the_stock(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct
) -> None:
    pid = (await create_product(stock=2))["id"]
    await mark_opened(redis, pid)
    keys = SaleKeys(pid)
    assert (await get_product(client, pid))["state"] == "open"
    await redis.set(keys.stock, 0)
    product = await get_product(client, pid)
    assert (product["state"], product["stock_left"], product["stock_total"]) == ("sold_out", 0, 2)
    await redis.set(keys.stock, -3)  # never shown below zero
    assert (await get_product(client, pid))["stock_left"] == 0
    await redis.set(keys.stock, 1)  # a cancelled order returned a unit
    product = await get_product(client, pid)
    assert (product["state"], product["stock_left"]) == ("open", 1)


async def test_paused_and_cancelled_states(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct
) -> None:
    pid = (await create_product())["id"]
    await mark_opened(redis, pid)
    assert (await client.post(f"/admin/sales/{pid}/pause", headers=ADMIN)).status_code == 200
    assert (await get_product(client, pid))["state"] == "paused"
    await redis.set(SaleKeys(pid).stock, 0)
    assert (await get_product(client, pid))["state"] == "sold_out"  # sold out beats paused
    await redis.hset(SaleKeys(pid).sale, "cancelled", "1")
    assert (await get_product(client, pid))["state"] == "closed"


async def test_patch_moves_the_state(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct
) -> None:
    pid = (await create_product(sale_start=iso_in(3600), prequeue_s=60))["id"]
    assert (await get_product(client, pid))["state"] == "scheduled"
    reply = await client.patch(f"/admin/products/{pid}", json={"prequeue_s": 7200}, headers=ADMIN)
    assert reply.status_code == 200
    assert (await get_product(client, pid))["state"] == "prequeue"
    reply = await client.patch(
        f"/admin/products/{pid}", json={"sale_start": iso_in(-5)}, headers=ADMIN
    )
    assert reply.status_code == 200
    await mark_opened(redis, pid)
    assert (await get_product(client, pid))["state"] == "open"
    reply = await client.patch(
        f"/admin/products/{pid}", json={"sale_end": iso_in(-1)}, headers=ADMIN
    )
    assert reply.status_code == 200
    assert (await get_product(client, pid))["state"] == "closed"


# --- 404 / 405 / 431 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/products/no-such-product-y1",
        "/products/UPPER",
        "/products/a_b",
        "/products/-lead",
        "/products/" + "a" * 65,
        "/products/ab%0A",
        "/products/%00",
        "/nope",
        "/admin",
        "/admin/products/x/extra",
        "/admin/sales/x",
        "/admin/sales/x/stop",
    ],
)
async def test_unknown_path_is_404_json(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/products"),
        ("DELETE", "/products"),
        ("PUT", "/products/x"),
        ("POST", "/products/x"),
        ("PUT", "/admin/products"),  # GET lists the sales (test_admin_listing.py)
        ("PATCH", "/admin/products"),
        ("PUT", "/admin/products/x"),
        ("DELETE", "/admin/products/x"),
        ("POST", "/admin/products/x"),
        ("GET", "/admin/sales/x/pause"),
        ("DELETE", "/admin/sales/x/resume"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
    ],
)
async def test_wrong_method_is_405_json(client: httpx.AsyncClient, method: str, path: str) -> None:
    reply = await client.request(method, path, headers=ADMIN)
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers.get("allow")


@pytest.mark.parametrize("path", ["/products", "/healthz", "/admin/products"])
async def test_huge_headers_are_431_json(client: httpx.AsyncClient, path: str) -> None:
    reply = await client.post(path, json={}, headers={**ADMIN, "x-padding": "a" * 9000})
    assert_error(reply, 431, "headers_too_large")
    many = {f"x-h{i}": "b" * 100 for i in range(90)}
    assert_error(await client.get(path, headers=many), 431, "headers_too_large")


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    reply = await client.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}
    await client.get("/products")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "flashsale_shop_http_requests_total" in metrics.text


async def test_health_is_503_when_the_database_is_down(settings: Settings) -> None:
    # A port nobody listens on: the lifespan starts (the engine connects lazily), SELECT 1 fails.
    broken = settings.replace(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none")
    app = create_app(broken)
    async with running(app) as client:
        await app.state.ctx.producer.wait_connected(30)
        client.headers[HEADER_GATE_SECRET] = broken.gate_secrets()[0]
        assert_error(await client.get("/healthz"), 503, "unavailable")
        # The catalog lives in Redis and still answers.
        assert (await client.get("/products")).status_code == 200


# --- only the gate reaches the catalog and orders ---------------------------------------------


@pytest.mark.parametrize("secret", [None, "", "forged", "0" * 64])
@pytest.mark.parametrize("path", ["/products", "/products/any-id", "/products/any-id/orders"])
async def test_catalog_answers_only_the_gate(
    client: httpx.AsyncClient, secret: str | None, path: str
) -> None:
    del client.headers[HEADER_GATE_SECRET]
    if secret is not None:
        client.headers[HEADER_GATE_SECRET] = secret
    assert_error(await client.get(path), 403, "forbidden")
    # Health, metrics and the admin API are for operators, not behind the gate.
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_gate_secret_of_an_older_key_still_works(settings: Settings) -> None:
    rotated = settings.replace(secret_keys=("a-newer-secret-key-0123456789", *settings.secret_keys))
    app = create_app(rotated)
    async with running(app) as client:
        await app.state.ctx.producer.wait_connected(30)
        old_gate = {HEADER_GATE_SECRET: settings.gate_secrets()[0]}
        new_gate = {HEADER_GATE_SECRET: rotated.gate_secrets()[0]}
        assert (await client.get("/products", headers=old_gate)).status_code == 200
        assert (await client.get("/products", headers=new_gate)).status_code == 200
