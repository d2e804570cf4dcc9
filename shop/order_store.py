"""Orders in PostgreSQL: storing reservations, paying, cancelling, expiring holds.

Every state change writes its outbox event in the same transaction, so ``order.paid`` and
``order.cancelled`` are published if and only if the change committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.constants import TOPIC_ORDER_CANCELLED, TOPIC_ORDER_PAID
from infra.sale.views import iso_utc
from infra.web.trace import outgoing_headers
from shop.models import orders, outbox

RECORD_FIELDS = (
    "order_id",
    "product_id",
    "visitor_id",
    "quantity",
    "unit_price",
    "currency",
    "total",
    "created_ms",
    "hold_expires_ms",
)


class BadRecord(ValueError):
    """A reservation record (or an order.placed message) that can never be stored."""


# The last millisecond of 9999-12-31: PostgreSQL's timestamptz and Python's datetime both end
# there, and a record's times beyond it can never be stored.
MAX_MS = 253_402_300_799_999
_STRINGS = ("order_id", "product_id", "visitor_id", "currency")
_INTEGERS = ("quantity", "unit_price", "total")
_TIMES = ("created_ms", "hold_expires_ms")


def row_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """The orders row of a reservation record; BadRecord if it is not one.

    Its times stay unix milliseconds (``created_ms``, ``hold_expires_ms``): PostgreSQL turns
    them into timestamptz in the insert itself (store_placed). Two datetimes per row built
    here were a fifth of the order worker's Python per order (py-spy, ~4 us of ~20)."""
    try:
        row = {name: record[name] for name in RECORD_FIELDS}
    except (KeyError, TypeError):
        raise BadRecord("missing fields") from None
    for name in _STRINGS:
        value = row[name]
        if type(value) is not str or not value:
            raise BadRecord(f"{name} must be a non-empty string")
    for name in _INTEGERS:
        value = row[name]
        if type(value) is not int or value < 0:
            raise BadRecord(f"{name} must be a non-negative integer")
    for name in _TIMES:
        value = row[name]
        if type(value) is not int or not 0 <= value <= MAX_MS:
            raise BadRecord(f"{name} must be a unix time in ms, up to the year 9999")
    return row


def parse_record(raw: str | bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRecord("not JSON") from None
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    return record


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def api_view(row: Any) -> dict[str, Any]:
    """API.md's order, from an orders row."""
    view = {
        "order_id": row.order_id,
        "product_id": row.product_id,
        "visitor_id": row.visitor_id,
        "quantity": row.quantity,
        "unit_price": row.unit_price,
        "currency": row.currency,
        "total": row.total,
        "status": row.status,
        "created_at": iso_utc(_ms(row.created_at)),
        "hold_expires_at": iso_utc(_ms(row.hold_expires_at)),
    }
    if row.status == "cancelled":
        view["cancel_reason"] = row.cancel_reason
    return view


def record_view(record: dict[str, Any]) -> dict[str, Any]:
    """API.md's order, from a reservation record PostgreSQL does not hold yet."""
    status = record["status"]
    view = {
        "order_id": record["order_id"],
        "product_id": record["product_id"],
        "visitor_id": record["visitor_id"],
        "quantity": record["quantity"],
        "unit_price": record["unit_price"],
        "currency": record["currency"],
        "total": record["total"],
        "status": status,
        "created_at": iso_utc(record["created_ms"]),
        "hold_expires_at": iso_utc(record["hold_expires_ms"]),
    }
    if status == "cancelled":
        view["cancel_reason"] = "user"
    return view


# The columns of a placed order and their PostgreSQL types: store_placed sends each column
# as one array and unnests them in PostgreSQL, which also turns the unix milliseconds into
# timestamptz (exactly: whole milliseconds of an interval, no floating point).
_PLACED = (
    ("order_id", "text"),
    ("product_id", "text"),
    ("visitor_id", "text"),
    ("quantity", "integer"),
    ("unit_price", "bigint"),
    ("currency", "text"),
    ("total", "bigint"),
    ("created_ms", "bigint"),
    ("hold_expires_ms", "bigint"),
)
_EPOCH_MS = "timestamptz 'epoch' + {} * interval '1 millisecond'"
_INSERT_PLACED = text(
    "INSERT INTO orders (order_id, product_id, visitor_id, quantity, unit_price, currency, "
    "total, status, created_at, hold_expires_at) "
    "SELECT order_id, product_id, visitor_id, quantity, unit_price, currency, total, "
    f"'placed', {_EPOCH_MS.format('created_ms')}, {_EPOCH_MS.format('hold_expires_ms')} "
    f"FROM unnest({', '.join(f'CAST(:{name} AS {kind}[])' for name, kind in _PLACED)}) "
    f"AS placed({', '.join(name for name, _ in _PLACED)}) "
    "ON CONFLICT (order_id) DO NOTHING"
)


async def store_placed(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Idempotent on order_id: redelivery, replays and the reconciler never duplicate.
    `rows` are row_from_record's.

    One statement whatever the batch: nine arrays, which asyncpg encodes in C and PostgreSQL
    unnests. SQLAlchemy's executemany built a parameter set per row in Python, and that was
    the order worker's largest cost once its batches overlapped (py-spy)."""
    if rows:
        columns = {name: [row[name] for row in rows] for name, _ in _PLACED}
        await conn.execute(_INSERT_PLACED, columns)


async def existing_ids(conn: AsyncConnection, order_ids: Iterable[str]) -> set[str]:
    ids = list(order_ids)
    if not ids:
        return set()
    result = await conn.execute(select(orders.c.order_id).where(orders.c.order_id.in_(ids)))
    return set(result.scalars())


async def load(
    conn: AsyncConnection, product_id: str, order_id: str, visitor_id: str, lock: bool = False
) -> Any | None:
    """The visitor's own order, or None (another visitor's order is as good as missing)."""
    query = select(orders).where(
        orders.c.order_id == order_id,
        orders.c.product_id == product_id,
        orders.c.visitor_id == visitor_id,
    )
    if lock:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


def _event(row: Any, topic: str) -> dict[str, Any]:
    # The relay sends it later, from the worker: the request's id and trace go with the row.
    headers = dict(outgoing_headers()) or None
    return {"topic": topic, "key": row.product_id, "payload": api_view(row), "headers": headers}


async def mark_paid(conn: AsyncConnection, order_id: str) -> Any:
    row = (
        await conn.execute(
            update(orders)
            .where(orders.c.order_id == order_id)
            .values(status="paid", paid_at=func.now())
            .returning(orders)
        )
    ).one()
    await conn.execute(outbox.insert().values(**_event(row, TOPIC_ORDER_PAID)))
    return row


async def mark_cancelled(conn: AsyncConnection, order_id: str, reason: str) -> Any:
    row = (
        await conn.execute(
            update(orders)
            .where(orders.c.order_id == order_id)
            .values(status="cancelled", cancel_reason=reason, cancelled_at=func.now())
            .returning(orders)
        )
    ).one()
    await conn.execute(outbox.insert().values(**_event(row, TOPIC_ORDER_CANCELLED)))
    return row


async def expire_holds(conn: AsyncConnection, limit: int = 500) -> list[Any]:
    """Cancel placed orders whose hold has passed, with their outbox events."""
    due = (
        select(orders.c.order_id)
        .where(orders.c.status == "placed", orders.c.hold_expires_at < func.now())
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = (
        await conn.execute(
            update(orders)
            .where(orders.c.order_id.in_(due))
            .values(status="cancelled", cancel_reason="expired", cancelled_at=func.now())
            .returning(orders)
        )
    ).all()
    if rows:
        await conn.execute(outbox.insert(), [_event(row, TOPIC_ORDER_CANCELLED) for row in rows])
    return list(rows)


async def unreturned(conn: AsyncConnection, limit: int = 500) -> list[Any]:
    """Cancelled orders whose units are not yet back in the Redis stock."""
    query = (
        select(orders.c.order_id, orders.c.product_id)
        .where(orders.c.status == "cancelled", orders.c.stock_returned.is_(False))
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def mark_returned(conn: AsyncConnection, order_ids: Sequence[str]) -> None:
    if order_ids:
        await conn.execute(
            update(orders).where(orders.c.order_id.in_(order_ids)).values(stock_returned=True)
        )


async def count_by_status(conn: AsyncConnection, product_id: str) -> dict[str, int]:
    query = (
        select(orders.c.status, func.count())
        .where(orders.c.product_id == product_id)
        .group_by(orders.c.status)
    )
    return {status: count for status, count in (await conn.execute(query)).all()}
