"""Orders through the gate: place, read, pay, cancel (API.md's Shop API).

Identity comes only from the headers the gate sets after verifying the access token.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from infra.constants import (
    HEADER_PRODUCT_ID,
    HEADER_VISITOR_ID,
    TOPIC_ORDER_PLACED,
)
from infra.sale.keys import SaleKeys
from infra.sale.views import path_sale_keys
from infra.web import errors
from infra.web.app import JSONResponse, read_json_object
from shop import order_store
from shop.context import ShopContext, shop_context

log = logging.getLogger("flashsale.shop")

IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,64}")  # with fullmatch: `$` lets "\n" end it
ORDER_ID_RE = re.compile(r"o_[0-9a-f]{24}")
CARD_RE = re.compile(r"[0-9]{16}")
DECLINED_CARD = "4000000000000002"
MAX_QUANTITY = 1_000_000


def _caller(request: Request) -> tuple[ShopContext, SaleKeys, str]:
    ctx = shop_context(request)
    keys = path_sale_keys(request)
    visitor = request.headers.get(HEADER_VISITOR_ID, "")
    if not visitor:
        raise errors.TokenMissing("orders need an access token, checked by the gate")
    if request.headers.get(HEADER_PRODUCT_ID) != keys.product_id:
        raise errors.TokenWrongProduct("the access token is for another product")
    return ctx, keys, visitor


def _order_id(request: Request) -> str:
    order_id = request.path_params["order_id"]
    if not ORDER_ID_RE.fullmatch(order_id):
        raise errors.NotFound("no such order")
    return order_id


def _quantity(body: dict[str, Any]) -> int:
    extra = sorted(set(body) - {"quantity"})
    if extra:
        # A client never sets price, currency or identity: only how many.
        raise errors.InvalidRequest(f"unexpected field(s): {', '.join(extra)}")
    quantity = body.get("quantity")
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise errors.InvalidRequest("quantity must be a positive integer")
    return quantity


async def place(request: Request) -> Response:
    ctx, keys, visitor = _caller(request)
    # An empty key is not "no key": a client that sends one means to retry with it, and would
    # get a new order on every retry (found by tests/api's fuzzing).
    idem = request.headers.get("idempotency-key")
    if idem is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idem):
        raise errors.InvalidRequest("Idempotency-Key must be 1 to 64 visible ASCII characters")
    idem = idem or ""
    quantity = _quantity(await read_json_object(request))
    order_id = "o_" + secrets.token_hex(12)
    reply = await ctx.reservations.reserve(keys, visitor, quantity, order_id, idem)
    outcome = reply[0]
    if outcome == "not_found":
        raise errors.NotFound("no such product")
    if outcome == "sold_out":
        raise errors.SoldOut("the stock is gone")
    if outcome == "limit_reached":
        raise errors.LimitReached("this visitor has already bought its limit")
    if outcome == "too_many":
        raise errors.InvalidRequest(f"quantity must be at most {reply[1]}")
    if outcome == "closed":
        raise errors.Closed(f"the sale is {reply[1]}, not open")
    record = order_store.parse_record(reply[1])
    if outcome == "exists":
        ctx.metrics.inc("orders_idempotent_replays_total")
        return JSONResponse(await _current_view(ctx, keys, record), status_code=202)
    try:
        # The request id and trace go into the message's headers (shop.producer).
        await ctx.producer.publish(TOPIC_ORDER_PLACED, keys.product_id, reply[1].encode())
    except Exception as exc:  # any produce failure: undo the reservation, leak no stock
        await ctx.reservations.rollback(keys, order_id)
        ctx.metrics.inc("orders_rolled_back_total")
        log.warning("order.placed not produced, rolled back: %s", type(exc).__name__)
        raise errors.Unavailable(
            "the order could not be queued; nothing was reserved, try again",
            headers={"Retry-After": "2"},
        ) from None
    ctx.metrics.inc("orders_accepted_total")
    return JSONResponse(order_store.record_view(record), status_code=202)


async def _current_view(ctx: ShopContext, keys: SaleKeys, record: dict[str, Any]) -> dict[str, Any]:
    async with ctx.engine.connect() as conn:
        row = await order_store.load(
            conn, keys.product_id, record["order_id"], record["visitor_id"]
        )
    return order_store.api_view(row) if row else order_store.record_view(record)


async def read(request: Request) -> Response:
    ctx, keys, visitor = _caller(request)
    order_id = _order_id(request)
    async with ctx.engine.connect() as conn:
        row = await order_store.load(conn, keys.product_id, order_id, visitor)
    if row:
        return JSONResponse(order_store.api_view(row))
    record = await ctx.reservations.record(keys, order_id)
    if record is None or record["visitor_id"] != visitor:
        raise errors.NotFound("no such order")
    return JSONResponse(order_store.record_view(record))


async def _locked(
    ctx: ShopContext, conn: AsyncConnection, keys: SaleKeys, order_id: str, visitor: str
) -> Any:
    """The visitor's order, row-locked; a reservation not yet stored is stored first, so pay
    and cancel always work on PostgreSQL's row."""
    row = await order_store.load(conn, keys.product_id, order_id, visitor, lock=True)
    if row is not None:
        return row
    record = await ctx.reservations.record(keys, order_id)
    if record is None or record["visitor_id"] != visitor or record["status"] == "cancelled":
        raise errors.NotFound("no such order")
    await order_store.store_placed(conn, [order_store.row_from_record(record)])
    row = await order_store.load(conn, keys.product_id, order_id, visitor, lock=True)
    if row is None:
        raise errors.NotFound("no such order")
    return row


async def pay(request: Request) -> Response:
    ctx, keys, visitor = _caller(request)
    order_id = _order_id(request)
    body = await read_json_object(request)
    card = body.get("card")
    if set(body) != {"card"} or not isinstance(card, str) or not CARD_RE.fullmatch(card):
        raise errors.InvalidRequest('the body must be {"card": "<16 digits>"}')
    async with ctx.engine.begin() as conn:
        row = await _locked(ctx, conn, keys, order_id, visitor)
        if row.status == "paid":
            return JSONResponse(order_store.api_view(row))
        if row.status == "cancelled":
            raise errors.Conflict(f"the order was cancelled ({row.cancel_reason})")
        if row.hold_expires_at.timestamp() <= time.time():
            raise errors.Conflict("the hold on this order has expired")
        if card == DECLINED_CARD:
            ctx.metrics.inc("payments_declined_total")
            raise errors.PaymentDeclined("the card was declined; the order stays payable")
        row = await order_store.mark_paid(conn, order_id)
    await ctx.reservations.stored(keys, [order_id])
    ctx.metrics.inc("payments_total")
    return JSONResponse(order_store.api_view(row))


async def cancel(request: Request) -> Response:
    ctx, keys, visitor = _caller(request)
    order_id = _order_id(request)
    async with ctx.engine.begin() as conn:
        row = await _locked(ctx, conn, keys, order_id, visitor)
        if row.status == "paid":
            raise errors.Conflict("a paid order cannot be cancelled here")
        if row.status == "placed":
            row = await order_store.mark_cancelled(conn, order_id, "user")
    await ctx.compensation.give_back([(order_id, keys.product_id)])
    ctx.metrics.inc("orders_cancelled_total", reason="user")
    return JSONResponse(order_store.api_view(row))
