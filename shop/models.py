"""PostgreSQL, the system of record: orders, the outbox of order events, dead letters."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("product_id", Text, nullable=False),
    Column("visitor_id", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("cancel_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("hold_expires_at", DateTime(timezone=True), nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("paid_at", DateTime(timezone=True)),
    Column("cancelled_at", DateTime(timezone=True)),
    # Set once a cancelled order's units are back in the Redis stock (compensation done).
    Column("stock_returned", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint("quantity > 0", name="orders_quantity_positive"),
    CheckConstraint("status IN ('placed', 'paid', 'cancelled')", name="orders_status_known"),
    Index("orders_product_status", "product_id", "status"),
    Index("orders_visitor", "product_id", "visitor_id"),
    Index("orders_holds", "hold_expires_at", postgresql_where=text("status = 'placed'")),
    Index(
        "orders_unreturned",
        "cancelled_at",
        postgresql_where=text("status = 'cancelled' AND NOT stock_returned"),
    ),
)

# Order state changes, written in the same transaction as the change and published to Kafka
# by the relay: an event is sent if and only if its change committed.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    # The Kafka headers the event goes out with: the request id and traceparent of the
    # request that wrote it (infra.web.trace), or null outside a request.
    Column("headers", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("published_at", DateTime(timezone=True)),
    Index("outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("key", Text),
    # The order a decodable message carries: an order waits in the queue at most once.
    Column("order_id", Text),
    Column("value", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("replayed_at", DateTime(timezone=True)),
    Index(
        "dead_letters_waiting_order",
        "order_id",
        unique=True,
        postgresql_where=text("replayed_at IS NULL AND order_id IS NOT NULL"),
    ),
    # The waiting letters: the DLQ listing, its size on /metrics and the deliverer's watch,
    # which counts them every second per worker.
    Index("dead_letters_waiting", "id", postgresql_where=text("replayed_at IS NULL")),
)
