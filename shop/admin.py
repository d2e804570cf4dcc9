"""The admin API of API.md: list, create and change sales, pause and resume admissions."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from infra.sale.keys import SaleKeys
from infra.sale.views import existing_sale_info, path_sale_keys, product_view, sale_info_view
from infra.web import errors
from infra.web.app import JSONResponse, read_json_object
from shop import catalog, dlq, order_store, sales
from shop.context import ShopContext, shop_context
from shop.products import listed_ids


def _require_admin(request: Request) -> ShopContext:
    ctx = shop_context(request)
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    expected = ctx.settings.admin_key.encode()
    # An unset key opens nothing: compare_digest(b"", b"") is True.
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(key.strip().encode(), expected)
    ):
        raise errors.Unauthorized("send the admin key as `Authorization: Bearer <key>`")
    return ctx


async def _view(ctx: ShopContext, keys: SaleKeys, info: dict[str, str]) -> dict[str, Any] | None:
    """The product and its settings, or None when there is no sale behind the id."""
    stored = await ctx.redis.hgetall(keys.sale)
    if not info or not stored:
        return None
    return {**product_view(keys.product_id, info), **catalog.config_view(stored)}


async def _admin_view(ctx: ShopContext, keys: SaleKeys) -> dict[str, Any]:
    view = await _view(ctx, keys, await existing_sale_info(ctx.scripts, keys))
    if view is None:  # deleted between the two reads
        raise errors.NotFound("no such product")
    return view


async def _listed_view(ctx: ShopContext, product_id: str) -> dict[str, Any] | None:
    """A listed sale's view, or None when its index entry has no sale behind it (sales.
    create_sale indexes first, so an entry may briefly, or after a failed create, lack one)."""
    keys = SaleKeys(product_id)
    return await _view(ctx, keys, await ctx.scripts.info(keys))


async def list_products(request: Request) -> Response:
    ctx = _require_admin(request)
    product_ids = await listed_ids(ctx.redis)
    views = await asyncio.gather(*(_listed_view(ctx, p) for p in product_ids))
    return JSONResponse([view for view in views if view is not None])


async def read_product(request: Request) -> Response:
    ctx = _require_admin(request)
    return JSONResponse(await _admin_view(ctx, path_sale_keys(request)))


async def create_product(request: Request) -> Response:
    ctx = _require_admin(request)
    keys = await sales.create_sale(ctx.redis, ctx.scripts, await read_json_object(request))
    return JSONResponse(await _admin_view(ctx, keys), status_code=201)


async def update_product(request: Request) -> Response:
    ctx = _require_admin(request)
    keys = path_sale_keys(request)
    await sales.update_sale(ctx.redis, ctx.scripts, keys, await read_json_object(request))
    return JSONResponse(await _admin_view(ctx, keys))


async def pause(request: Request) -> Response:
    return await _set_paused(request, "1")


async def resume(request: Request) -> Response:
    return await _set_paused(request, "0")


async def _set_paused(request: Request, paused: str) -> Response:
    ctx = _require_admin(request)
    keys = path_sale_keys(request)
    await sales.apply(ctx.scripts, keys, {"paused": paused})
    info = await existing_sale_info(ctx.scripts, keys)
    return JSONResponse(sale_info_view(keys.product_id, info))


async def stats(request: Request) -> Response:
    ctx = _require_admin(request)
    keys = path_sale_keys(request)
    info = await existing_sale_info(ctx.scripts, keys)
    pending = await ctx.redis.zcard(keys.pending)
    async with ctx.engine.connect() as conn:
        counts = await order_store.count_by_status(conn, keys.product_id)
    return JSONResponse(
        {
            "waiting": int(info["waiting"]),
            "admitted": int(info["issued"]),
            "active": int(info["active"]),
            "tokens_issued": int(info["issued"]),
            "orders": {
                "pending": pending,
                "placed": counts.get("placed", 0),
                "paid": counts.get("paid", 0),
                "cancelled": counts.get("cancelled", 0),
            },
            "stock_total": int(info["stock_total"]),
            "stock_left": int(info["stock_left"]),
            "admit_rate_per_s": float(info["rate"]),
        }
    )


async def dead_letters(request: Request) -> Response:
    ctx = _require_admin(request)
    async with ctx.engine.connect() as conn:
        return JSONResponse(await dlq.waiting(conn))


async def replay_dead_letters(request: Request) -> Response:
    ctx = _require_admin(request)
    try:
        sent = await dlq.replay(ctx.engine, ctx.producer)
    except Exception as exc:
        raise errors.Unavailable(
            f"the broker did not take the replay ({type(exc).__name__}); try again",
            headers={"Retry-After": "2"},
        ) from None
    return JSONResponse({"replayed": sent})
