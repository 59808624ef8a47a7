"""Each subscriber's own cadence: a schedule and a time zone, and when their next email may go.

``subscribers.schedule`` (a cron line, or NULL for the global ``schedule.deliver``) and
``subscribers.timezone`` follow the configuration (``subscribers[].schedule``,
``subscribers[].timezone``). ``next_email_at`` is the next time the schedule fires: a
delivery run claims a subscriber with a schedule only once it has passed (or to retry
what failed), and moves it to the fire after. NULL for everyone else, as before.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("schedule", sa.String(), nullable=True))
    op.add_column("subscribers", sa.Column("timezone", sa.String(), nullable=True))
    op.add_column("subscribers", sa.Column("next_email_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("next_email_at")
        batch.drop_column("timezone")
        batch.drop_column("schedule")
