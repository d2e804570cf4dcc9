"""GET /admin/products and GET /admin/products/{id}: every sale with its configuration."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import SALES_KEY
from shop.catalog import DEFAULTS
from tests.shop.conftest import CreateProduct
from tests.shop.helpers import ADMIN, PRODUCT_KEYS, assert_error
from tests.shop.test_admin import BAD_AUTH
from tests.support import unique_id

# The product object plus every optional field POST /admin/products takes, and nothing else
# (the seed of the draw, above all, stays in Redis).
SALE_KEYS = PRODUCT_KEYS | set(DEFAULTS)


async def test_list_has_every_sale_with_its_config(
    client: httpx.AsyncClient, create_product: CreateProduct
) -> None:
    first = await create_product(batch_size=7, interval_s=0.5, max_active=40, overbook=2)
    second = await create_product(queue_mode="shuffle_prequeue", sale_start="2031-01-01T00:00:00Z")
    reply = await client.get("/admin/products", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    listed = {sale["id"]: sale for sale in reply.json()}
    for sale in listed.values():
        assert set(sale) == SALE_KEYS, sale
    # What the list says is what the create answered, field by field.
    assert listed[first["id"]] == first
    assert listed[second["id"]] == second
    assert listed[first["id"]]["batch_size"] == 7
    assert listed[first["id"]]["interval_s"] == 0.5
    assert listed[first["id"]]["max_active"] == 40
    assert listed[first["id"]]["overbook"] == 2.0
    assert listed[first["id"]]["state"] == "open"
    assert listed[second["id"]]["state"] == "scheduled"


async def test_list_follows_changes(
    client: httpx.AsyncClient, create_product: CreateProduct
) -> None:
    pid = (await create_product())["id"]
    patched = await client.patch(f"/admin/products/{pid}", json={"batch_size": 3}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    paused = await client.post(f"/admin/sales/{pid}/pause", headers=ADMIN)
    assert paused.status_code == 200, paused.text
    listed = {s["id"]: s for s in (await client.get("/admin/products", headers=ADMIN)).json()}
    assert listed[pid]["batch_size"] == 3
    assert listed[pid]["state"] == "paused"


async def test_list_skips_an_index_entry_without_a_sale(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct
) -> None:
    # sales.create_sale indexes before it writes the sale, so a failed create leaves this.
    ghost = unique_id("ghost")
    await redis.sadd(SALES_KEY, ghost)
    try:
        pid = (await create_product())["id"]
        reply = await client.get("/admin/products", headers=ADMIN)
        assert reply.status_code == 200, reply.text
        ids = {sale["id"] for sale in reply.json()}
        assert pid in ids and ghost not in ids
    finally:
        await redis.srem(SALES_KEY, ghost)


async def test_read_one_sale(client: httpx.AsyncClient, create_product: CreateProduct) -> None:
    created = await create_product(per_user_limit=3, hold_s=120, pickup_s=30)
    reply = await client.get(f"/admin/products/{created['id']}", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    sale = reply.json()
    assert set(sale) == SALE_KEYS
    assert sale == created
    assert (sale["per_user_limit"], sale["hold_s"], sale["pickup_s"]) == (3, 120, 30)


@pytest.mark.parametrize(
    "product_id",
    ["absent-never-created", "Bad-Id", "a_b", "-a", "a" * 65, "%00", "a%20b", "..", "é"],
)
async def test_read_unknown_or_bad_id_is_404(client: httpx.AsyncClient, product_id: str) -> None:
    reply = await client.get(f"/admin/products/{product_id}", headers=ADMIN)
    assert_error(reply, 404, "not_found")


@pytest.mark.parametrize("headers", BAD_AUTH)
async def test_listing_needs_the_key(
    client: httpx.AsyncClient, create_product: CreateProduct, headers: dict
) -> None:
    pid = (await create_product())["id"]
    assert_error(await client.get("/admin/products", headers=headers), 401, "unauthorized")
    reply = await client.get(f"/admin/products/{pid}", headers=headers)
    assert_error(reply, 401, "unauthorized")
    # Without the key, an unknown id is as refused as a known one: nothing to probe.
    reply = await client.get(f"/admin/products/{unique_id('absent')}", headers=headers)
    assert_error(reply, 401, "unauthorized")
