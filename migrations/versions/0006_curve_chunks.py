"""curve chunks: a training batch's curve points apart from its checkpoint

A checkpoint now holds the state of a batch only (weights, epochs, status), compressed,
written in a transaction of its own. The curve points recorded between two checkpoints
are appended to `curve_chunks`, in blocks of runs, as compressed Arrow streams; a running
run's curve is read from them, and a finished run's whole curve is in `runs.curve`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "curve_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("first_run", sa.Integer(), nullable=False),
        sa.Column("stop_run", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("optimum", sa.Float(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["work_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_curve_chunks_item", "curve_chunks", ["item_id", "seq", "first_run"], unique=True
    )
    op.create_index("ix_curve_chunks_runs", "curve_chunks", ["experiment_id", "first_run"])


def downgrade() -> None:
    op.drop_index("ix_curve_chunks_runs", table_name="curve_chunks")
    op.drop_index("ix_curve_chunks_item", table_name="curve_chunks")
    op.drop_table("curve_chunks")
