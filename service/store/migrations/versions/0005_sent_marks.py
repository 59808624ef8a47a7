"""Sent marks: one small row per accepted email, committed at once; folded into the outbox in bulk.
And an index on a subscriber's rows by state (claims walk subscribers; it replaces the
subscriber_id index, whose column leads it). The index on state alone goes: every claim
and every sent email rewrote its entries, and only the counts of ``status`` read it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sent_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deliveries_subscriber_state", "deliveries", ["subscriber_id", "state"])
    op.drop_index("ix_deliveries_subscriber_id", table_name="deliveries")
    op.drop_index("ix_deliveries_state", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_state", "deliveries", ["state"])
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"])
    op.drop_index("ix_deliveries_subscriber_state", table_name="deliveries")
    op.drop_table("sent_marks")
