"""worker registry and routing

Workers record the queues they serve and when they were last seen, so that work
goes only to queues that some worker serves. Work items record when they were
first queued and the queue they may fall back to (training with device "auto"
falls back from gpu to cpu).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=255), primary_key=True),
        sa.Column("queues", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("work_items") as batch_op:
        batch_op.add_column(sa.Column("fallback", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("work_items") as batch_op:
        batch_op.drop_column("queued_at")
        batch_op.drop_column("fallback")
    op.drop_table("workers")
