"""Deployments (with their config/env snapshots and runtime handle) and the aliases that
point hostnames at them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from devpush.db import Base, new_id, utcnow


class Status(enum.StrEnum):
    prepare = "prepare"
    deploy = "deploy"
    finalize = "finalize"
    fail = "fail"
    completed = "completed"


class Conclusion(enum.StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    skipped = "skipped"


class AliasType(enum.StrEnum):
    deployment = "deployment"
    branch = "branch"
    environment = "environment"
    environment_id = "environment_id"
    pr = "pr"


ACTIVE_STATUSES = (Status.prepare, Status.deploy, Status.finalize, Status.fail)


class InstanceHealth(enum.StrEnum):
    """A live deployment's instance after its app exited (None while it serves normally)."""

    restarting = "restarting"  # its route is pulled; the monitor restarts it with backoff
    crashed = "crashed"  # it exited too often; its route stays pulled until a new deployment


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (
        Index("ix_deployments_project_created", "project_id", "created_at"),
        Index("ix_deployments_status", "status"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    environment_id: Mapped[str | None] = mapped_column(
        ForeignKey("environments.id", ondelete="SET NULL")
    )
    branch: Mapped[str] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    commit_message: Mapped[str | None] = mapped_column(Text)
    commit_author: Mapped[str | None] = mapped_column(String(255))
    trigger: Mapped[str] = mapped_column(
        String(32)
    )  # api|cli|ui|github_push|github_pr|git_push|...
    pr_number: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[Status] = mapped_column(Enum(Status, name="deployment_status"))
    conclusion: Mapped[Conclusion | None] = mapped_column(
        Enum(Conclusion, name="deployment_conclusion")
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    env_enc: Mapped[str] = mapped_column(Text)  # Fernet(JSON of {key: value}) snapshot
    secret_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    runtime: Mapped[str] = mapped_column(String(32))
    # None is SQL NULL, not JSON null: "has an instance" is `runtime_handle IS NOT NULL`
    # (migration 0015 turned the JSON nulls left by earlier removals into SQL NULL).
    runtime_handle: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    upstream: Mapped[str | None] = mapped_column(String(255))
    # Replicas 1..N-1 (runtime_handle and upstream are replica 0, which ran the build): each
    # {"replica": k, "handle": {...}, "upstream": "host:port" | None (not routed)}.
    replicas: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    # After a live instance exits (workers/monitor.py, deployments/crashes.py): restarting or
    # crashed, the last exit code, the times of its recent exits and its last log lines.
    instance_health: Mapped[InstanceHealth | None] = mapped_column(
        Enum(InstanceHealth, native_enum=False, length=16)
    )
    exit_code: Mapped[int | None] = mapped_column(Integer)
    crashes: Mapped[list[float]] = mapped_column(JSON, default=list)
    crash_log: Mapped[list[str] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    prepare_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deploy_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    concluded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # Log bookkeeping, updated in the same transaction as the lines they describe:
    # log_seq is the last sequence number used; log_offset packs the runtime lines shipped per
    # stream (stdout in the high 32 bits, stderr in the low 32; see logs/shipper.py).
    log_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    log_offset: Mapped[int] = mapped_column(BigInteger, default=0)


class Alias(Base):
    __tablename__ = "aliases"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[AliasType] = mapped_column(Enum(AliasType, name="alias_type"))
    value: Mapped[str] = mapped_column(String(63), unique=True)  # hostname label
    environment_id: Mapped[str | None] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    branch: Mapped[str | None] = mapped_column(String(255))
    deployment_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    previous_deployment_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class AliasSwitch(Base):
    """A rollback or promote whose aliases moved, waiting for Traefik to serve it. Whoever
    takes the row (deletes it) concludes the switch: its event once the route is served, or
    the aliases back where they were. The request that made it does, or the monitor, should
    that process die while it waited."""

    __tablename__ = "alias_switches"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))  # deployment.rolled_back | deployment.promoted
    router: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    aliases: Mapped[list[str]] = mapped_column(JSON)
    earlier: Mapped[dict[str, str | None]] = mapped_column(JSON)  # each alias's previous before
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # the event's
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
