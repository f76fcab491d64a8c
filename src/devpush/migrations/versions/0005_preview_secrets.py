"""Preview secrets: a project-wide secret reaches preview deployments only when marked for them

Existing secrets start unmarked, so after this upgrade they no longer reach previews (pull
requests, and branches that match no environment); plain variables still go everywhere.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "env_vars",
        sa.Column("previews", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("env_vars", "previews")
