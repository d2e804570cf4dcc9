"""The admin API of API.md: list, create and change sales, pause and resume admissions.

Two roles (API.md): the admin key may call every route; the viewer key (optional) only the
reading ones, and gets 403 `forbidden` from the others. No key, or another one, is 401.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from infra import events
from infra.constants import EVENT_EMIT_TIMEOUT_S
from infra.sale.keys import SaleKeys
from infra.sale.views import existing_sale_info, path_sale_keys, product_view, sale_info_view
from infra.web import errors
from infra.web.app import JSONResponse, read_json_object
from shop import catalog, dlq, order_store, sales
from shop.context import ShopContext, shop_context
from shop.products import listed_ids

log = logging.getLogger("flashsale.admin")


ADMIN, VIEWER = "admin", "viewer"


def role(request: Request) -> tuple[ShopContext, str]:
    """Who calls: ADMIN or VIEWER, from the Bearer key; 401 for anyone else."""
    ctx = shop_context(request)
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    given = key.strip().encode()
    if scheme.lower() == "bearer" and given:
        # An unset key opens nothing: compare_digest(b"", b"") is True, so empty keys are
        # skipped. Both comparisons always run, so the time does not tell which key is close.
        admin_key, viewer_key = ctx.settings.admin_key.encode(), ctx.settings.viewer_key.encode()
        is_admin = bool(admin_key) and hmac.compare_digest(given, admin_key)
        is_viewer = bool(viewer_key) and hmac.compare_digest(given, viewer_key)
        if is_admin:
            return ctx, ADMIN
        if is_viewer:
            return ctx, VIEWER
    raise errors.Unauthorized("send the admin key as `Authorization: Bearer <key>`")


def require_reader(request: Request) -> ShopContext:
    """A reading route: the admin key or the viewer key."""
    return role(request)[0]


def require_admin(request: Request) -> ShopContext:
    """A route that changes something: the admin key only (the viewer key is 403)."""
    ctx, who = role(request)
    if who != ADMIN:
        raise errors.Forbidden("the viewer key may only read; this needs the admin key")
    return ctx


async def whoami(request: Request) -> Response:
    """GET /admin/role: which key this is, so the dashboard can hide what it may not do."""
    return JSONResponse({"role": role(request)[1]})


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
    ctx = require_reader(request)
    product_ids = await listed_ids(ctx.redis)
    views = await asyncio.gather(*(_listed_view(ctx, p) for p in product_ids))
    return JSONResponse([view for view in views if view is not None])


async def read_product(request: Request) -> Response:
    ctx = require_reader(request)
    return JSONResponse(await _admin_view(ctx, path_sale_keys(request)))


async def create_product(request: Request) -> Response:
    ctx = require_admin(request)
    keys = await sales.create_sale(ctx.redis, ctx.scripts, await read_json_object(request))
    view = await _admin_view(ctx, keys)
    if await ctx.redis.hget(keys.sale, "opened") == "1":
        # Created after its start: open at once (config.lua), with no scheduler's opening.
        # Awaited (bounded), so the event is out before the answer, in the order of the calls.
        await events.emit(
            ctx.redis,
            events.SALE_OPENED,
            keys.product_id,
            once=events.sale_marker(keys.product_id, events.SALE_OPENED),
            name=view["name"],
            stock_total=view["stock_total"],
        )
    return JSONResponse(view, status_code=201)


async def update_product(request: Request) -> Response:
    ctx = require_admin(request)
    keys = path_sale_keys(request)
    await sales.update_sale(ctx.redis, ctx.scripts, keys, await read_json_object(request))
    return JSONResponse(await _admin_view(ctx, keys))


async def pause(request: Request) -> Response:
    return await _set_paused(request, "1")


async def resume(request: Request) -> Response:
    return await _set_paused(request, "0")


async def _set_paused(request: Request, paused: str) -> Response:
    ctx = require_admin(request)
    keys = path_sale_keys(request)
    await sales.apply(ctx.scripts, keys, {"paused": paused})
    await _announce_pause(ctx, keys.product_id, paused)
    info = await existing_sale_info(ctx.scripts, keys)
    return JSONResponse(sale_info_view(keys.product_id, info))


async def _announce_pause(ctx: ShopContext, product_id: str, paused: str) -> None:
    """One event per change, not per call: a marker mirrors the flag, and SET ... GET hands
    its old value to exactly one of two replicas pausing at once. A second pause is no news."""
    try:
        async with asyncio.timeout(EVENT_EMIT_TIMEOUT_S):
            marker = events.sale_marker(product_id, "paused")
            before = await ctx.redis.set(marker, paused, get=True)
    except Exception as exc:  # the pause itself is done; only its news is lost
        log.warning("pause event skipped: %s", type(exc).__name__, extra={"product_id": product_id})
        return
    if paused == "1" and before != "1":
        await events.emit(ctx.redis, events.SALE_PAUSED, product_id)
    elif paused == "0" and before == "1":
        await events.emit(ctx.redis, events.SALE_RESUMED, product_id)


async def stats(request: Request) -> Response:
    ctx = require_reader(request)
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
    ctx = require_reader(request)
    async with ctx.engine.connect() as conn:
        return JSONResponse(await dlq.waiting(conn))


async def replay_dead_letters(request: Request) -> Response:
    ctx = require_admin(request)
    try:
        sent = await dlq.replay(ctx.engine, ctx.producer)
    except Exception as exc:
        raise errors.Unavailable(
            f"the broker did not take the replay ({type(exc).__name__}); try again",
            headers={"Retry-After": "2"},
        ) from None
    return JSONResponse({"replayed": sent})
