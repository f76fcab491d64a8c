"""Domains: whether Traefik holds a certificate for them (TLS mode)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("domains", sa.Column("certificate", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("domains", "certificate")
