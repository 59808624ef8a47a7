"""Learned tastes: the word space and each reader's model (issue: learn what each reader likes).

``taste_spaces`` holds document counts of hashed words over the store's papers (TF-IDF);
``tastes`` one row per reader with ratings or likes: what the model was fitted on, the
likes as resolved against the store, the model itself (None when too few examples), and the
newest paper weighed for the reader's suggestions.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "taste_spaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("papers", sa.Integer(), nullable=False),
        sa.Column("last_paper_id", sa.Integer(), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tastes",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("examples", sa.String(), nullable=False),
        sa.Column("likes", sa.String(), nullable=False),
        sa.Column("liked", sa.JSON(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.LargeBinary(), nullable=True),
        sa.Column("suggested_through", sa.Integer(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"]),
        sa.PrimaryKeyConstraint("subscriber_id"),
    )


def downgrade() -> None:
    op.drop_table("tastes")
    op.drop_table("taste_spaces")
