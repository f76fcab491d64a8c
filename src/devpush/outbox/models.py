from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from devpush.db import Base, utcnow

# The transaction id that wrote the event: delivery goes in (txid, id) order and only below
# the oldest running transaction, so an event committed late is never skipped.
CURRENT_TXID = text("(pg_current_xact_id()::text)::bigint")
SNAPSHOT_XMIN = text("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")


class DomainEvent(Base):
    """One thing that happened (`deployment.failed`, `domain.verified`, ...). The ids are
    plain columns, not foreign keys: an event outlives the rows it names."""

    __tablename__ = "domain_events"
    __table_args__ = (Index("ix_domain_events_txid_id", "txid", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    txid: Mapped[int] = mapped_column(BigInteger, server_default=CURRENT_TXID)
    type: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(32))
    project_id: Mapped[str | None] = mapped_column(String(32))
    deployment_id: Mapped[str | None] = mapped_column(String(32))
    domain_id: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SubscriberCursor(Base):
    """How far a subscriber got, and its failures (shown on the admin page)."""

    __tablename__ = "event_cursors"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    txid: Mapped[int] = mapped_column(BigInteger, default=0)
    event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row, on one event
    last_error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
