from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from devpush.db import Base, utcnow


class UpgradeStep(Base):
    """One versioned upgrade step's outcome: applied, baseline (the database was created by a
    version that already had it, so it never ran) or failed (run again by the next update)."""

    __tablename__ = "upgrade_steps"
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")  # a failure's message and output tail
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
