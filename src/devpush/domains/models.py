"""Custom domains: a hostname that routes to (or redirects to) an environment's alias."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from devpush.db import Base, new_id, utcnow


class Domain(Base):
    __tablename__ = "domains"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    environment_id: Mapped[str] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    hostname: Mapped[str] = mapped_column(String(253), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="route")  # route|redirect
    redirect_to: Mapped[str | None] = mapped_column(String(253))
    verification_token: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|verified|failed
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # TLS mode: "issued" once Traefik holds a certificate for it, "failed" when it still has
    # none `certificate_grace` seconds after verification (domains/certificates.py).
    certificate: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
