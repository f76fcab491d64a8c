"""Git sources: webhook deliveries, PR previews, fork policy, deploy hooks, 64-bit GitHub ids

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 14:06:41.975995
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "github_deliveries",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_deliveries")),
    )
    op.create_index(
        op.f("ix_github_deliveries_received_at"),
        "github_deliveries",
        ["received_at"],
        unique=False,
    )
    op.create_table(
        "github_pull_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("head_ref", sa.String(length=255), nullable=False),
        sa.Column("head_sha", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("comment_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_github_pull_requests_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_pull_requests")),
        sa.UniqueConstraint(
            "project_id", "number", name=op.f("uq_github_pull_requests_project_id")
        ),
    )
    op.add_column("projects", sa.Column("repo_status", sa.String(length=16), nullable=True))
    op.add_column(
        "projects",
        sa.Column("allowed_forks", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )
    op.alter_column("projects", "allowed_forks", server_default=None)
    op.add_column(
        "projects", sa.Column("deploy_hook_token_hash", sa.String(length=64), nullable=True)
    )
    # GitHub ids outgrow 32 bits
    op.alter_column(
        "projects",
        "github_installation_id",
        existing_type=sa.Integer(),
        type_=sa.BigInteger(),
        existing_nullable=True,
    )
    op.alter_column(
        "projects",
        "github_repo_id",
        existing_type=sa.Integer(),
        type_=sa.BigInteger(),
        existing_nullable=True,
    )
    op.create_index(
        op.f("ix_projects_github_repo_id"), "projects", ["github_repo_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_projects_github_repo_id"), table_name="projects")
    op.alter_column(
        "projects",
        "github_repo_id",
        existing_type=sa.BigInteger(),
        type_=sa.Integer(),
        existing_nullable=True,
    )
    op.alter_column(
        "projects",
        "github_installation_id",
        existing_type=sa.BigInteger(),
        type_=sa.Integer(),
        existing_nullable=True,
    )
    op.drop_column("projects", "deploy_hook_token_hash")
    op.drop_column("projects", "allowed_forks")
    op.drop_column("projects", "repo_status")
    op.drop_table("github_pull_requests")
    op.drop_index(op.f("ix_github_deliveries_received_at"), table_name="github_deliveries")
    op.drop_table("github_deliveries")
