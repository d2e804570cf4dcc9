"""The webhook tables (migration 0002): subscriptions, the events they hear, and every delivery
attempt. In shop.models' metadata, beside the orders."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shop.models import metadata

WEBHOOK_FORMATS = ("json", "slack")
WEBHOOK_ID_PATTERN = "^wh_[0-9a-f]{16}$"  # "wh_" and 64 random bits
# An attempt's life: pending (due at due_at) -> sending -> delivered | failed (the next attempt
# is a new pending row) | gave_up (the last attempt failed).
ATTEMPT_STATES = ("pending", "sending", "delivered", "failed", "gave_up")

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    Column("format", Text, nullable=False),
    # The signing key of the deliveries: shown once, at creation, never listed nor logged.
    Column("secret", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("format IN ('json', 'slack')", name="webhooks_format_known"),
)

# One row per event the deliverer took from the stream: what every attempt sends again.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("product_id", Text),
    Column("body", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("webhook_id", Text, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", Text, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer),
    # A stream entry taken twice (a worker died before its XACK) fans out to the same rows.
    UniqueConstraint("webhook_id", "event_id", "attempt", name="webhook_deliveries_once"),
    CheckConstraint(
        "state IN ('pending', 'sending', 'delivered', 'failed', 'gave_up')",
        name="webhook_deliveries_state_known",
    ),
    Index(
        "webhook_deliveries_due", "due_at", postgresql_where=text("state IN ('pending', 'sending')")
    ),
    Index("webhook_deliveries_listing", "webhook_id", "id"),
)
