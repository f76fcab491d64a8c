"""Managed databases: a project's databases, their copies per environment, their backups

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 10:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "managed_databases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("env_var", sa.String(length=64), nullable=False),
        sa.Column("previews", sa.String(length=8), nullable=False),
        sa.Column("volume", sa.String(length=40), nullable=True),
        sa.Column("backup_schedule", sa.String(length=100), nullable=True),
        sa.Column("backup_retention", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_managed_databases_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_managed_databases")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_managed_databases_project_id")),
    )
    op.create_index(op.f("ix_managed_databases_project_id"), "managed_databases", ["project_id"])
    op.create_table(
        "database_copies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("database_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("environment_id", sa.String(length=32), nullable=True),
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("db_name", sa.String(length=63), nullable=True),
        sa.Column("password_enc", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["database_id"],
            ["managed_databases.id"],
            name=op.f("fk_database_copies_database_id_managed_databases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_database_copies_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_database_copies_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_database_copies")),
        sa.UniqueConstraint("database_id", "scope", name=op.f("uq_database_copies_database_id")),
        sa.UniqueConstraint("db_name", name=op.f("uq_database_copies_db_name")),
    )
    op.create_index(op.f("ix_database_copies_database_id"), "database_copies", ["database_id"])
    op.create_table(
        "database_backups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("database_id", sa.String(length=32), nullable=False),
        sa.Column("copy_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["database_id"],
            ["managed_databases.id"],
            name=op.f("fk_database_backups_database_id_managed_databases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["copy_id"],
            ["database_copies.id"],
            name=op.f("fk_database_backups_copy_id_database_copies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_database_backups")),
    )
    op.create_index(op.f("ix_database_backups_database_id"), "database_backups", ["database_id"])
    op.create_index(
        "ix_database_backups_copy_created", "database_backups", ["copy_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("database_backups")
    op.drop_table("database_copies")
    op.drop_table("managed_databases")
