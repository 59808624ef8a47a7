"""Feeds live in the store: any host sharing it serves them, without a shared disk.

``feed_docs`` holds each rendered feed (Atom and RSS of everything, of each
topic, of each subscriber) with what it was rendered from (``mark``), its
``etag`` and when it last changed. The cycle renders only the feeds whose mark
changed; ``paperboy serve`` answers a conditional GET from one row by key.
The table starts empty: the first cycle after the upgrade renders every feed.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_docs",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("mark", sa.String(), nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("feed_docs")
