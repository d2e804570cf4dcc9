"""The public catalog: GET /products and GET /products/{id}."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from infra import errors
from infra.constants import PRODUCT_ID_RE, SALES_KEY, SaleKeys
from infra.http import JSONResponse
from infra.sale import product_view
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
    product_id = request.path_params["product_id"]
    if not PRODUCT_ID_RE.fullmatch(product_id):
        raise errors.NotFound("no such product")
    info = await ctx.scripts.info(SaleKeys(product_id))
    if not info:
        raise errors.NotFound("no such product")
    return JSONResponse(product_view(product_id, info))
