"""The admin API of API.md: create and change sales, pause and resume admissions."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from infra import errors
from infra.constants import PRODUCT_ID_RE, SaleKeys
from infra.http import JSONResponse, read_json_object
from infra.sale import product_view, sale_info_view
from shop import catalog, sales
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
    keys = await sales.create_sale(ctx.redis, ctx.scripts, await read_json_object(request))
    return JSONResponse(await _admin_view(ctx, keys), status_code=201)


async def update_product(request: Request) -> Response:
    ctx = _require_admin(request)
    keys = _sale_keys(request)
    await sales.update_sale(ctx.redis, ctx.scripts, keys, await read_json_object(request))
    return JSONResponse(await _admin_view(ctx, keys))


async def pause(request: Request) -> Response:
    return await _set_paused(request, "1")


async def resume(request: Request) -> Response:
    return await _set_paused(request, "0")


async def _set_paused(request: Request, paused: str) -> Response:
    ctx = _require_admin(request)
    keys = _sale_keys(request)
    await sales.apply(ctx.scripts, keys, {"paused": paused})
    info = await ctx.scripts.info(keys)
    return JSONResponse(sale_info_view(keys.product_id, info))
