"""Assertions shared by the shop's and the gate's tests."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from infra.constants import DEV_ADMIN_KEY, SALES_KEY
from infra.sale.keys import SaleKeys

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
PRODUCT_KEYS = {
    "id",
    "name",
    "price",
    "currency",
    "stock_total",
    "stock_left",
    "sale_start",
    "state",
    "per_user_limit",
}
SALE_INFO_KEYS = {
    "product_id",
    "state",
    "starts_at",
    "waiting",
    "admitted",
    "admit_rate_per_s",
    "shuffle_commitment",
    "shuffle_seed",
}


def assert_error(reply: httpx.Response, status: int, code: str) -> None:
    """API.md's error shape: JSON `{"error", "detail"}` with this status and code."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]


async def assert_not_written(redis: Redis, product_id: object) -> None:
    """Nothing of a rejected sale reached Redis."""
    if not isinstance(product_id, str):
        return
    keys = SaleKeys(product_id)
    assert await redis.exists(keys.sale, keys.stock) == 0
    assert not await redis.sismember(SALES_KEY, product_id)


async def mark_opened(redis: Redis, product_id: str) -> None:
    """What the scheduler does at the start: the sale is now open."""
    await redis.hset(SaleKeys(product_id).sale, "opened", "1")
