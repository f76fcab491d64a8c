"""A removed instance's handle is SQL NULL, not JSON null

The column was stored as JSON `null` when an instance was removed, so every query for
deployments with an instance (`runtime_handle IS NOT NULL`: the cleanup every ten minutes,
the monitor's reconciliation, the metrics sampler, a project's teardown) also read every
deployment ever retired. The model now writes SQL NULL; this turns the old rows into it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 00:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE deployments SET runtime_handle = NULL WHERE json_typeof(runtime_handle) = 'null'"
    )


def downgrade() -> None:
    pass  # SQL NULL reads as None in the earlier code too
