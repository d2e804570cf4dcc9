"""an index of the waiting dead letters

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Partial: replayed letters are history; the listing, the metric and the deliverer's
    # once-a-second watch only ever ask for the waiting ones.
    op.create_index(
        "dead_letters_waiting",
        "dead_letters",
        ["id"],
        postgresql_where=sa.text("replayed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("dead_letters_waiting", table_name="dead_letters")
