"""The public views of a sale, built from info.lua's reply (shared by the queue and the shop)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from infra.constants import QUEUE_MODE_FIFO
from infra.sale.keys import SaleKeys, is_product_id, sale_keys
from infra.sale.scripts import SaleScripts
from infra.web.errors import NotFound


def path_sale_keys(request: Request) -> SaleKeys:
    """The sale named by the path's `{product_id}`; a malformed id is as unknown as a
    missing one (API.md: 404 `not_found`). Every route of every app with a `{product_id}`
    reads it through here (tests/hostile/test_ids.py asks each one)."""
    product_id = request.path_params["product_id"]
    if not is_product_id(product_id):
        raise NotFound("no such product")
    return sale_keys(product_id)


async def existing_sale_info(scripts: SaleScripts, keys: SaleKeys) -> dict[str, str]:
    """info.lua's view of the sale; 404 `not_found` when there is no such sale."""
    info = await scripts.info(keys)
    if not info:
        raise NotFound("no such product")
    return info


def iso_utc(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def sale_info_view(product_id: str, info: dict[str, str]) -> dict[str, Any]:
    """API.md's public sale info (GET /queue/{id}, pause and resume)."""
    shuffled = info["mode"] != QUEUE_MODE_FIFO
    return {
        "product_id": product_id,
        "state": info["state"],
        "starts_at": iso_utc(int(info["start_ms"])),
        "waiting": int(info["waiting"]),
        "admitted": int(info["issued"]),
        "admit_rate_per_s": float(info["rate"]),
        "queue_mode": info["mode"],
        "shuffle_commitment": info.get("commitment") if shuffled else None,
        "shuffle_seed": info.get("seed") if shuffled else None,
    }


def product_view(product_id: str, info: dict[str, str]) -> dict[str, Any]:
    """API.md's product (GET /products/{id})."""
    return {
        "id": product_id,
        "name": info["name"],
        "price": int(info["price"]),
        "currency": info["currency"],
        "stock_total": int(info["stock_total"]),
        "stock_left": int(info["stock_left"]),
        "sale_start": iso_utc(int(info["start_ms"])),
        "state": info["state"],
    }
