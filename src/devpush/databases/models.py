"""A project's managed database, its copies (one per environment, and per preview branch when
previews get their own), and the backups of each copy."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from devpush.db import Base, new_id, utcnow

ENGINES = ("postgres", "sqlite")
PREVIEWS = ("none", "own")


class ManagedDatabase(Base):
    __tablename__ = "managed_databases"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(40))
    engine: Mapped[str] = mapped_column(String(16))
    env_var: Mapped[str] = mapped_column(String(64))  # DATABASE_URL, or <NAME>_DATABASE_URL
    previews: Mapped[str] = mapped_column(String(8), default="none")  # none|own
    volume: Mapped[str | None] = mapped_column(String(40))  # sqlite: the volume holding it
    backup_schedule: Mapped[str | None] = mapped_column(String(100))  # a cron expression
    backup_retention: Mapped[int] = mapped_column(Integer, default=7)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatabaseCopy(Base):
    """One environment's database (postgres: a database and a role of the same name on the
    server; sqlite: the file on that environment's volume). `scope` is the environment id,
    or `preview:<branch>` for a preview branch's own copy."""

    __tablename__ = "database_copies"
    __table_args__ = (UniqueConstraint("database_id", "scope"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    database_id: Mapped[str] = mapped_column(
        ForeignKey("managed_databases.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    environment_id: Mapped[str | None] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    scope: Mapped[str] = mapped_column(String(300))
    db_name: Mapped[str | None] = mapped_column(String(63), unique=True)  # postgres: = role
    password_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatabaseBackup(Base):
    __tablename__ = "database_backups"
    __table_args__ = (Index("ix_database_backups_copy_created", "copy_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    database_id: Mapped[str] = mapped_column(
        ForeignKey("managed_databases.id", ondelete="CASCADE"), index=True
    )
    copy_id: Mapped[str] = mapped_column(ForeignKey("database_copies.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))  # running|succeeded|failed
    trigger: Mapped[str] = mapped_column(String(16))  # manual|schedule|restore-point
    path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
