"""Topics: the papers each topic matched (its public feed), and what brought each delivery.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topic_papers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(), nullable=False),
        sa.Column("paper_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["paper_id"], ["papers.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "paper_id"),
    )
    op.create_index(op.f("ix_topic_papers_paper_id"), "topic_papers", ["paper_id"], unique=False)
    op.create_index(op.f("ix_topic_papers_topic"), "topic_papers", ["topic"], unique=False)
    # Deliveries made before topics existed were all brought by keywords.
    op.add_column("deliveries", sa.Column("via", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
    op.execute("""UPDATE deliveries SET via = '["keywords"]'""")


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_column("via")
    op.drop_table("topic_papers")
