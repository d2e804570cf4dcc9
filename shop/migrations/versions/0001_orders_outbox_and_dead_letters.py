"""orders, outbox and dead letters

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:31:14.988042
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "dead_letters_waiting_order",
        "dead_letters",
        ["order_id"],
        unique=True,
        postgresql_where=sa.text("replayed_at IS NULL AND order_id IS NOT NULL"),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("visitor_id", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hold_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "stored_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stock_returned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint("status IN ('placed', 'paid', 'cancelled')", name="orders_status_known"),
        sa.CheckConstraint("quantity > 0", name="orders_quantity_positive"),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_index(
        "orders_holds",
        "orders",
        ["hold_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'placed'"),
    )
    op.create_index("orders_product_status", "orders", ["product_id", "status"], unique=False)
    op.create_index(
        "orders_unreturned",
        "orders",
        ["cancelled_at"],
        unique=False,
        postgresql_where=sa.text("status = 'cancelled' AND NOT stock_returned"),
    )
    op.create_index("orders_visitor", "orders", ["product_id", "visitor_id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "outbox_unpublished", table_name="outbox", postgresql_where=sa.text("published_at IS NULL")
    )
    op.drop_table("outbox")
    op.drop_index("orders_visitor", table_name="orders")
    op.drop_index(
        "orders_unreturned",
        table_name="orders",
        postgresql_where=sa.text("status = 'cancelled' AND NOT stock_returned"),
    )
    op.drop_index("orders_product_status", table_name="orders")
    op.drop_index(
        "orders_holds", table_name="orders", postgresql_where=sa.text("status = 'placed'")
    )
    op.drop_table("orders")
    op.drop_index("dead_letters_waiting_order", table_name="dead_letters")
    op.drop_table("dead_letters")
