"""A team's notification channels and the deliveries made to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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

KINDS = ("webhook", "slack", "discord", "email")


class NotificationChannel(Base):
    """Where a team is told about events. The URL (Slack's and Discord's are secrets too) and
    the webhook's signing secret are encrypted at rest."""

    __tablename__ = "notification_channels"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook|slack|discord|email
    url_enc: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(320))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    project_ids: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every project
    environments: Mapped[list[str]] = mapped_column(JSON, default=list)  # names or ids; empty: all
    secret_enc: Mapped[str | None] = mapped_column(Text)  # webhook only
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="ok")  # ok|failing
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)  # attempts, in a row
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NotificationDelivery(Base):
    """One event sent (or being sent) to one channel. (channel, event) is unique: an event
    delivered twice to the subscriber makes no second delivery. A test has no event id."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("channel_id", "event_id"),
        Index("ix_notification_deliveries_channel_created", "channel_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    channel_id: Mapped[str] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    # The event as it was (ids, data, time): sending never depends on the outbox keeping it.
    event: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # pending|sending (an attempt claimed until next_attempt_at)|succeeded|failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
