"""outbox events keep the request id and trace they were written under

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 05:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, and rows written before it (or by the
    # hold expirer, outside any request) simply have none.
    op.add_column("outbox", sa.Column("headers", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "headers")
