"""The admin API of API.md: create and change sales, pause and resume admissions."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from infra import errors
from infra.constants import PRODUCT_ID_RE, SALES_KEY, SaleKeys
from infra.http import JSONResponse, read_json_object
from infra.sale import product_view, sale_info_view
from shop import catalog
from shop.context import ShopContext, shop_context


def _require_admin(request: Request) -> ShopContext:
    ctx = shop_context(request)
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    expected = ctx.settings.admin_key.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), expected):
        raise errors.Unauthorized("send the admin key as `Authorization: Bearer <key>`")
    return ctx


def _sale_keys(request: Request) -> SaleKeys:
    product_id = request.path_params["product_id"]
    if not PRODUCT_ID_RE.match(product_id):
        raise errors.NotFound("no such product")
    return SaleKeys(product_id)


async def _admin_view(ctx: ShopContext, keys: SaleKeys) -> dict[str, Any]:
    info = await ctx.scripts.info(keys)
    if not info:
        raise errors.NotFound("no such product")
    stored = await ctx.redis.hgetall(keys.sale)
    return {**product_view(keys.product_id, info), **catalog.config_view(stored)}


async def create_product(request: Request) -> Response:
    ctx = _require_admin(request)
    product_id, fields = catalog.new_sale(await read_json_object(request))
    keys = SaleKeys(product_id)
    # Indexed first: an index entry without a sale is skipped by its readers, while a sale
    # missing from the index would be invisible to the scheduler.
    await ctx.redis.sadd(SALES_KEY, product_id)
    outcome = await ctx.scripts.run("config", keys, args=["create", *_flat(fields)])
    if outcome == "exists":
        raise errors.Exists(f"a product with id {product_id!r} exists")
    return JSONResponse(await _admin_view(ctx, keys), status_code=201)


async def update_product(request: Request) -> Response:
    ctx = _require_admin(request)
    keys = _sale_keys(request)
    body = await read_json_object(request)
    current = await ctx.redis.hgetall(keys.sale)
    if not current:
        raise errors.NotFound("no such product")
    await _apply(ctx, keys, catalog.changed_sale(body, current))
    return JSONResponse(await _admin_view(ctx, keys))


async def _apply(ctx: ShopContext, keys: SaleKeys, changes: dict[str, str]) -> None:
    outcome = await ctx.scripts.run("config", keys, args=["update", *_flat(changes)])
    if outcome == "not_found":
        raise errors.NotFound("no such product")
    if outcome == "stock_conflict":
        raise errors.InvalidRequest("stock cannot go below the units already sold or reserved")
    if outcome == "started":
        raise errors.InvalidRequest(
            "sale_start, prequeue_s and queue_mode cannot change once the sale has opened"
        )


async def pause(request: Request) -> Response:
    return await _set_paused(request, "1")


async def resume(request: Request) -> Response:
    return await _set_paused(request, "0")


async def _set_paused(request: Request, paused: str) -> Response:
    ctx = _require_admin(request)
    keys = _sale_keys(request)
    await _apply(ctx, keys, {"paused": paused})
    info = await ctx.scripts.info(keys)
    return JSONResponse(sale_info_view(keys.product_id, info))


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]
