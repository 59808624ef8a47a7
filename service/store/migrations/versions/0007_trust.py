"""What an operator needs to trust a run: forgetting papers, backfill, why a job failed.

- ``papers.forgotten_at``: ``paperboy forget`` hides a paper from every feed and
  cancels its pending deliveries; the row stays, so sent deliveries keep their
  paper and a later file does not bring it back.
- ``paper_files``: which files brought each paper (by content hash), so that
  ``paperboy forget --file`` removes only what no other file also brought.
  Papers stored before this migration are linked to the file that first
  brought them (``papers.source``, by name).
- ``rule_fingerprints``: the rules of each subscriber and topic as last
  matched; a new or changed one is backfilled (``backfill`` days).
- ``job_runs.error``: why a job run failed, for ``/healthz`` and ``status``.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("papers", sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("job_runs", sa.Column("error", sa.String(), nullable=True))
    op.create_table(
        "paper_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("paper_id", sa.Integer(), nullable=False),
        sa.Column("file_sha256", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["paper_id"], ["papers.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("file_sha256", "paper_id"),
    )
    op.create_index(op.f("ix_paper_files_paper_id"), "paper_files", ["paper_id"], unique=False)
    op.execute(
        """
        INSERT INTO paper_files (paper_id, file_sha256)
        SELECT p.id, MIN(f.sha256) FROM papers p
        JOIN ingested_files f ON f.error IS NULL
         AND (f.path = p.source OR f.path LIKE '%/' || p.source)
        GROUP BY p.id
        """
    )
    op.create_table(
        "rule_fingerprints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner"),
    )


def downgrade() -> None:
    op.drop_table("rule_fingerprints")
    op.drop_index(op.f("ix_paper_files_paper_id"), table_name="paper_files")
    op.drop_table("paper_files")
    with op.batch_alter_table("job_runs") as batch_op:
        batch_op.drop_column("error")
    with op.batch_alter_table("papers") as batch_op:
        batch_op.drop_column("forgotten_at")
