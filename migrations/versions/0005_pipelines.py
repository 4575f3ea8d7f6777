"""pipelines: names, tags, notes, notifications, live runs and work-item times

Experiments gain a name, notes, and the dataset's generator, n and d as columns
(copied from the spec, so lists filter on them); tags live in their own table.
Notifications record each signed POST to a spec's `notify` URL. Runs gain their
latest curve point while they train. Progress counts epochs, so its columns
become 64-bit. Work items record when a worker started and finished them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:20:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _dataset_columns(spec: Any) -> dict[str, Any]:
    """generator, n and d of a stored spec (custom data: its X's shape)."""
    if isinstance(spec, str):
        spec = json.loads(spec)
    ds = (spec or {}).get("dataset") or {}
    gen = ds.get("generator")
    if gen == "custom":
        X = ds.get("X") or [[]]
        return {"generator": gen, "n": len(X), "d": len(X[0])}
    n = ds.get("d") if gen == "theorem2" else ds.get("n")
    return {"generator": gen, "n": n, "d": ds.get("d")}


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("notes", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("generator", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("n", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("d", sa.Integer(), nullable=True))
        batch_op.alter_column("progress_total", type_=sa.BigInteger(), existing_type=sa.Integer())
    with op.batch_alter_table("work_items") as batch_op:
        batch_op.alter_column("progress_done", type_=sa.BigInteger(), existing_type=sa.Integer())
        batch_op.alter_column("progress_total", type_=sa.BigInteger(), existing_type=sa.Integer())
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("latest", sa.JSON(), nullable=True))
    op.create_table(
        "experiment_tags",
        sa.Column(
            "experiment_id",
            sa.String(length=32),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(length=64), primary_key=True),
    )
    op.create_index("ix_experiment_tags_tag", "experiment_tags", ["tag", "experiment_id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "experiment_id",
            sa.String(length=32),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_notifications_experiment_id", "notifications", ["experiment_id"])

    experiments = sa.table(
        "experiments",
        sa.column("id", sa.String),
        sa.column("spec", sa.JSON),
        sa.column("generator", sa.String),
        sa.column("n", sa.Integer),
        sa.column("d", sa.Integer),
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(experiments.c.id, experiments.c.spec)).all():
        bind.execute(
            experiments.update()
            .where(experiments.c.id == row.id)
            .values(**_dataset_columns(row.spec))
        )


def downgrade() -> None:
    op.drop_index("ix_notifications_experiment_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_experiment_tags_tag", table_name="experiment_tags")
    op.drop_table("experiment_tags")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("latest")
    with op.batch_alter_table("work_items") as batch_op:
        batch_op.drop_column("finished_at")
        batch_op.drop_column("started_at")
        batch_op.alter_column("progress_total", type_=sa.Integer(), existing_type=sa.BigInteger())
        batch_op.alter_column("progress_done", type_=sa.Integer(), existing_type=sa.BigInteger())
    with op.batch_alter_table("experiments") as batch_op:
        batch_op.alter_column("progress_total", type_=sa.Integer(), existing_type=sa.BigInteger())
        batch_op.drop_column("d")
        batch_op.drop_column("n")
        batch_op.drop_column("generator")
        batch_op.drop_column("notes")
        batch_op.drop_column("name")
