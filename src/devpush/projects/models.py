"""Projects, their environments (branch patterns) and encrypted environment variables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from devpush.db import Base, new_id, utcnow


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("team_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    repo_url: Mapped[str | None] = mapped_column(Text)
    repo_credentials_enc: Mapped[str | None] = mapped_column(Text)
    github_installation_id: Mapped[int | None] = mapped_column(BigInteger)
    github_repo_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    github_repo_full_name: Mapped[str | None] = mapped_column(String(200))
    # None while the source works; otherwise why not: disconnected|deleted (GitHub said so)
    repo_status: Mapped[str | None] = mapped_column(String(16))
    # fork owners ("octocat"), repositories ("octocat/app") or "*" whose PRs get previews
    allowed_forks: Mapped[list[str]] = mapped_column(JSON, default=list)
    deploy_hook_token_hash: Mapped[str | None] = mapped_column(String(64))
    production_branch: Mapped[str] = mapped_column(String(255), default="main")
    # build_command, pre_deploy_command, start_command, root_directory, port, health_path,
    # cpus, memory_mb, runtime, image, preset
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    preview_deployments: Mapped[bool] = mapped_column(Boolean, default=True)
    log_retention_days: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|paused|deleting
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "slug"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    slug: Mapped[str] = mapped_column(String(40))
    branch_pattern: Mapped[str] = mapped_column(String(255))
    is_production: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
    replicas: Mapped[int | None] = mapped_column(Integer)  # None: the project's count
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EnvVar(Base):
    __tablename__ = "env_vars"
    __table_args__ = (
        UniqueConstraint("project_id", "environment_id", "key", postgresql_nulls_not_distinct=True),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    environment_id: Mapped[str | None] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(String(255))
    value_enc: Mapped[str] = mapped_column(Text)
    secret: Mapped[bool] = mapped_column(Boolean, default=False)
    # A project-wide secret reaches preview deployments (no environment) only when this is set.
    previews: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
