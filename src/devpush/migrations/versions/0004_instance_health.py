"""Instance health: a live deployment's instance that exits is restarted, then marked crashed

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deployments", sa.Column("instance_health", sa.String(length=16), nullable=True))
    op.add_column("deployments", sa.Column("exit_code", sa.Integer(), nullable=True))
    op.add_column(
        "deployments",
        sa.Column("crashes", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )
    op.add_column("deployments", sa.Column("crash_log", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "crash_log")
    op.drop_column("deployments", "crashes")
    op.drop_column("deployments", "exit_code")
    op.drop_column("deployments", "instance_health")
