"""The public catalog: GET /products and GET /products/{id}.

The product is API.md's, plus ``per_user_limit``: how many one visitor may buy, which a shop
front end needs before its first order (the gate's shop page offers quantities up to it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from infra.sale.views import existing_sale_info, path_sale_keys, product_view
from infra.web.app import JSONResponse
from shop.context import shop_context

MAX_LISTED = 1000


def public_product(product_id: str, info: dict[str, str]) -> dict[str, Any]:
    # info.lua reads per_user_limit with the rest; every sale has one (catalog.DEFAULTS).
    return {**product_view(product_id, info), "per_user_limit": int(info["per_user_limit"])}


async def listed_ids(redis: Redis) -> list[str]:
    """The ids a listing shows, the public one and the admin one: sorted, at most
    MAX_LISTED, so one reply stays small and quick even if the index has grown."""
    return sorted(await redis.smembers(SALES_KEY))[:MAX_LISTED]


async def list_products(request: Request) -> Response:
    ctx = shop_context(request)
    product_ids = await listed_ids(ctx.redis)
    infos = await asyncio.gather(*(ctx.scripts.info(SaleKeys(p)) for p in product_ids))
    return JSONResponse(
        [public_product(p, info) for p, info in zip(product_ids, infos, strict=True) if info]
    )


async def get_product(request: Request) -> Response:
    ctx = shop_context(request)
    keys = path_sale_keys(request)
    info = await existing_sale_info(ctx.scripts, keys)
    return JSONResponse(public_product(keys.product_id, info))
