"""PATCH /admin/products/{id} and pause/resume against the real shop app and Valkey."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from infra.sale.keys import SaleKeys
from tests.shop.conftest import CreateProduct
from tests.shop.helpers import (
    ADMIN,
    SALE_INFO_KEYS,
    assert_error,
    assert_not_written,
    mark_opened,
)
from tests.support import iso_in

# --- PATCH -----------------------------------------------------------------------------------


async def test_patch_changes_fields(
    client: httpx.AsyncClient, create_product: CreateProduct
) -> None:
    pid = (await create_product(sale_start="2031-01-01T00:00:00Z"))["id"]
    change = {
        "name": "Renamed",
        "price": 999,
        "currency": "USD",
        "sale_start": "2031-06-01T00:00:00Z",
        "sale_end": "2031-06-02T00:00:00Z",
        "queue_mode": "shuffle_prequeue",
        "batch_size": 5,
        "overbook": 2,
    }
    reply = await client.patch(f"/admin/products/{pid}", json=change, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    view = reply.json()
    assert view["sale_start"] == "2031-06-01T00:00:00.000Z"
    assert view["sale_end"] == "2031-06-02T00:00:00.000Z"
    for name in ("name", "price", "currency", "queue_mode", "batch_size", "overbook"):
        assert view[name] == change[name], name
    public = (await client.get(f"/products/{pid}")).json()
    assert (public["name"], public["price"], public["currency"]) == ("Renamed", 999, "USD")

    cleared = await client.patch(f"/admin/products/{pid}", json={"sale_end": None}, headers=ADMIN)
    assert cleared.status_code == 200
    assert cleared.json()["sale_end"] is None


async def test_patch_stock_moves_stock_left(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct
) -> None:
    pid = (await create_product(stock=100))["id"]
    keys = SaleKeys(pid)

    async def patch_stock(stock: int) -> httpx.Response:
        return await client.patch(f"/admin/products/{pid}", json={"stock": stock}, headers=ADMIN)

    reply = await patch_stock(150)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["stock_total"], reply.json()["stock_left"]) == (150, 150)
    await redis.decrby(keys.stock, 30)  # 30 units sold
    reply = await patch_stock(50)
    assert (reply.json()["stock_total"], reply.json()["stock_left"]) == (50, 20)
    assert_error(await patch_stock(29), 422, "invalid_request")
    view = (await client.get(f"/products/{pid}")).json()
    assert (view["stock_total"], view["stock_left"]) == (50, 20)
    reply = await patch_stock(30)
    assert (reply.json()["stock_total"], reply.json()["stock_left"]) == (30, 0)
    assert reply.json()["state"] == "sold_out"
    assert (await client.get(f"/products/{pid}")).json()["state"] == "sold_out"


@pytest.mark.parametrize(
    "change",
    [{"sale_start": "2031-01-01T00:00:00Z"}, {"queue_mode": "shuffle_prequeue"}, {"prequeue_s": 5}],
)
async def test_start_and_mode_are_frozen_once_opened(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct, change: dict
) -> None:
    pid = (await create_product(sale_start=iso_in(3600)))["id"]
    before_open = await client.patch(f"/admin/products/{pid}", json=change, headers=ADMIN)
    assert before_open.status_code == 200, before_open.text
    await client.patch(
        f"/admin/products/{pid}",
        json={"sale_start": iso_in(-60), "queue_mode": "fifo"},
        headers=ADMIN,
    )
    await mark_opened(redis, pid)
    before = await redis.hgetall(SaleKeys(pid).sale)
    reply = await client.patch(
        f"/admin/products/{pid}", json={**change, "name": "x"}, headers=ADMIN
    )
    assert_error(reply, 422, "invalid_request")
    assert await redis.hgetall(SaleKeys(pid).sale) == before
    # Everything else still changes after the opening.
    ok = await client.patch(
        f"/admin/products/{pid}", json={"name": "Later", "stock": 7}, headers=ADMIN
    )
    assert ok.status_code == 200, ok.text
    assert (ok.json()["name"], ok.json()["stock_total"], ok.json()["state"]) == ("Later", 7, "open")


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"id": "other"},
        {"opened": "1"},
        {"stock_left": 3},
        {"price": -5},
        {"price": True},
        {"name": ""},
        {"sale_end": "2030-12-31T00:00:00Z"},  # before the stored start
        {"sale_start": "2031-02-01T00:00:00Z"},  # after the stored end
        {"name": "ok", "batch_size": 0},  # one bad field: nothing changes
    ],
)
async def test_invalid_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct, change: dict
) -> None:
    pid = (
        await create_product(sale_start="2031-01-01T00:00:00Z", sale_end="2031-01-15T00:00:00Z")
    )["id"]
    before = await redis.hgetall(SaleKeys(pid).sale)
    reply = await client.patch(f"/admin/products/{pid}", json=change, headers=ADMIN)
    assert_error(reply, 422, "invalid_request")
    assert await redis.hgetall(SaleKeys(pid).sale) == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b""])
async def test_patch_malformed_body(
    client: httpx.AsyncClient, create_product: CreateProduct, raw: bytes
) -> None:
    pid = (await create_product())["id"]
    reply = await client.patch(f"/admin/products/{pid}", content=raw, headers=ADMIN)
    assert_error(reply, 422, "invalid_request")


@pytest.mark.parametrize(
    "path_id", ["no-such-product-x1", "UPPER", "a_b", "a" * 65, "%20", "ab%0A"]
)
async def test_patch_unknown_or_bad_id_is_404(
    client: httpx.AsyncClient, redis: Redis, path_id: str
) -> None:
    reply = await client.patch(f"/admin/products/{path_id}", json={"name": "x"}, headers=ADMIN)
    assert_error(reply, 404, "not_found")
    await assert_not_written(redis, "no-such-product-x1")


# --- pause / resume ----------------------------------------------------------------------------


async def test_pause_and_resume(
    client: httpx.AsyncClient, redis: Redis, create_product: CreateProduct
) -> None:
    pid = (await create_product())["id"]
    await mark_opened(redis, pid)
    paused = await client.post(f"/admin/sales/{pid}/pause", headers=ADMIN)
    assert paused.status_code == 200, paused.text
    info = paused.json()
    assert SALE_INFO_KEYS <= set(info)
    assert (info["product_id"], info["state"]) == (pid, "paused")
    assert (await client.get(f"/products/{pid}")).json()["state"] == "paused"
    again = await client.post(f"/admin/sales/{pid}/pause", headers=ADMIN)
    assert again.json()["state"] == "paused"
    resumed = await client.post(f"/admin/sales/{pid}/resume", headers=ADMIN)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "open"
    assert (await client.get(f"/products/{pid}")).json()["state"] == "open"


@pytest.mark.parametrize("path_id", ["no-such-product-x2", "UPPER", "a" * 65])
@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_pause_unknown_is_404(
    client: httpx.AsyncClient, redis: Redis, path_id: str, action: str
) -> None:
    assert_error(
        await client.post(f"/admin/sales/{path_id}/{action}", headers=ADMIN), 404, "not_found"
    )
    await assert_not_written(redis, "no-such-product-x2")
