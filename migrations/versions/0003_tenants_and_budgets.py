"""tenants and budgets

Experiments belong to a tenant and idempotency keys are unique per tenant; work
items carry their time limit, memory estimate and kill count.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: Names the unnamed unique constraint of 0001 on SQLite, so batch mode can drop it.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_unique_name() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "experiments_idempotency_key_key"
    return "uq_experiments_idempotency_key"


def upgrade() -> None:
    with op.batch_alter_table("experiments", naming_convention=NAMING) as batch_op:
        batch_op.add_column(
            sa.Column("tenant", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.drop_constraint(_old_unique_name(), type_="unique")
        batch_op.create_index(
            "ix_experiments_tenant_created", ["tenant", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_experiments_tenant_idempotency", ["tenant", "idempotency_key"], unique=True
        )
    with op.batch_alter_table("work_items") as batch_op:
        batch_op.add_column(sa.Column("time_limit", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("memory_estimate", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("kills", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("work_items") as batch_op:
        batch_op.drop_column("kills")
        batch_op.drop_column("memory_estimate")
        batch_op.drop_column("time_limit")
    with op.batch_alter_table("experiments", naming_convention=NAMING) as batch_op:
        batch_op.drop_index("ix_experiments_tenant_idempotency")
        batch_op.drop_index("ix_experiments_tenant_created")
        batch_op.create_unique_constraint(_old_unique_name(), ["idempotency_key"])
        batch_op.drop_column("tenant")
