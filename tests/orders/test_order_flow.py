"""An order's whole life on real Valkey, tansu and PostgreSQL: place, store, pay, cancel."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.orders.conftest import Worker, eventually, identity, stock_left, stored_count
from tests.support import new_sale


async def test_place_store_pay_and_cancel(
    shop: httpx.AsyncClient, worker: Worker, redis: Redis, engine: AsyncEngine, settings: Settings
) -> None:
    keys = await new_sale(redis, stock=5, per_user_limit=2, price=4200, currency="EUR")
    pid = keys.product_id
    alice = identity(settings, pid, "alice")
    placed = await shop.post(f"/products/{pid}/orders", json={"quantity": 2}, headers=alice)
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert (order["status"], order["quantity"], order["unit_price"], order["total"]) == (
        "pending",
        2,
        4200,
        8400,
    )
    assert order["visitor_id"] == "alice"
    assert await stock_left(redis, keys) == 3
    path = f"/products/{pid}/orders/{order['order_id']}"

    async def is_placed() -> bool:
        return (await shop.get(path, headers=alice)).json()["status"] == "placed"

    await eventually(is_placed, what="order placed")
    assert await stored_count(engine, pid) == 1
    declined = await shop.post(path + "/pay", json={"card": "4000000000000002"}, headers=alice)
    assert (declined.status_code, declined.json()["error"]) == (402, "payment_declined")
    paid = await shop.post(path + "/pay", json={"card": "4242424242424242"}, headers=alice)
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")

    bob = identity(settings, pid, "bob")
    other = (await shop.post(f"/products/{pid}/orders", json={"quantity": 1}, headers=bob)).json()
    assert (await shop.get(path, headers=bob)).status_code == 404  # alice's order
    cancelled = await shop.delete(f"/products/{pid}/orders/{other['order_id']}", headers=bob)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["cancel_reason"]) == ("cancelled", "user")
    assert await stock_left(redis, keys) == 3  # bob's unit came back
