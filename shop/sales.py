"""Creating and changing sales in Redis: used by the admin API, the demo and the tests."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from infra.web import errors
from shop import catalog


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


async def create_sale(redis: Redis, scripts: SaleScripts, body: dict[str, Any]) -> SaleKeys:
    """Validate and store a new sale (POST /admin/products). Raises the API's errors."""
    product_id, fields = catalog.new_sale(body)
    keys = SaleKeys(product_id)
    # Indexed first: an index entry without a sale is skipped by its readers, while a sale
    # missing from the index would be invisible to the scheduler.
    await redis.sadd(SALES_KEY, product_id)
    if await scripts.run("config", keys, args=["create", *_flat(fields)]) == "exists":
        raise errors.Exists(f"a product with id {product_id!r} exists")
    return keys


async def update_sale(
    redis: Redis, scripts: SaleScripts, keys: SaleKeys, body: dict[str, Any]
) -> None:
    """Validate and apply a partial change (PATCH /admin/products/{id})."""
    current = await redis.hgetall(keys.sale)
    if not current:
        raise errors.NotFound("no such product")
    await apply(scripts, keys, catalog.changed_sale(body, current))


async def apply(scripts: SaleScripts, keys: SaleKeys, changes: dict[str, str]) -> None:
    outcome = await scripts.run("config", keys, args=["update", *_flat(changes)])
    if outcome == "not_found":
        raise errors.NotFound("no such product")
    if outcome == "stock_conflict":
        raise errors.InvalidRequest("stock cannot go below the units already sold or reserved")
    if outcome == "started":
        raise errors.InvalidRequest(
            "sale_start, prequeue_s and queue_mode cannot change once the sale has opened"
        )
