"""Feeds follow the store: any host sharing it serves them, without a shared disk.

``feed_states`` holds each feed paperboy serves (everything, each topic, each
subscriber) with what it is rendered from (``mark``) and when that last
changed. The cycle updates a mark only when the feed's entries, title or
settings changed, and renders only those feeds into ``feeds.dir``; the web
server answers a conditional GET from one row by key (the ETag derives from
the mark) and renders a feed on request for a reader whose copy is old. The
table starts empty: the first cycle after the upgrade fills it.

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
        "feed_states",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("mark", sa.String(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("feed_states")
