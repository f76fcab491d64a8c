"""Replicas: a deployment's extra instances, and an environment's replica count

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "deployments",
        sa.Column("replicas", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )
    op.add_column("environments", sa.Column("replicas", sa.Integer(), nullable=True))
    # which replica wrote a line (None: the platform's own lines)
    op.add_column("log_lines", sa.Column("replica", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("log_lines", "replica")
    op.drop_column("environments", "replicas")
    op.drop_column("deployments", "replicas")
