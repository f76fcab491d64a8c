"""Log lines. The table is range-partitioned by day on `ts` (see the first migration), so
retention drops whole partitions; a trigram index (pg_trgm, where available) or a full-text
index (the embedded PostgreSQL) serves keyword search; regex search reads lines."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from devpush.db import Base


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = {"postgresql_partition_by": "RANGE (ts)"}
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(32))
    deployment_id: Mapped[str] = mapped_column(String(32))
    environment_id: Mapped[str | None] = mapped_column(String(32))
    branch: Mapped[str | None] = mapped_column(String(255))
    seq: Mapped[int] = mapped_column(BigInteger)  # per-deployment order, also the SSE event id
    stream: Mapped[str] = mapped_column(String(8))  # stdout|stderr
    phase: Mapped[str] = mapped_column(String(16))  # system|build|pre_deploy|runtime
    level: Mapped[str | None] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    replica: Mapped[int | None] = mapped_column(SmallInteger)  # None: a platform (system) line
