"""The public catalog: GET /products and GET /products/{id}."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from infra.sale.views import existing_sale_info, path_sale_keys, product_view
from infra.web.app import JSONResponse
from shop.context import shop_context

MAX_LISTED = 1000


async def list_products(request: Request) -> Response:
    ctx = shop_context(request)
    product_ids = sorted(await ctx.redis.smembers(SALES_KEY))[:MAX_LISTED]
    infos = await asyncio.gather(*(ctx.scripts.info(SaleKeys(p)) for p in product_ids))
    return JSONResponse(
        [product_view(p, info) for p, info in zip(product_ids, infos, strict=True) if info]
    )


async def get_product(request: Request) -> Response:
    ctx = shop_context(request)
    keys = path_sale_keys(request)
    info = await existing_sale_info(ctx.scripts, keys)
    return JSONResponse(product_view(keys.product_id, info))
