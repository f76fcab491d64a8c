"""Domain API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hostname: str = Field(min_length=4, max_length=253)
    environment: str = Field(
        "production", min_length=1, max_length=40, description="Environment name the domain follows"
    )
    kind: Literal["route", "redirect"] = "route"
    redirect_to: str | None = Field(None, max_length=253)


class DomainRead(BaseModel):
    id: str
    hostname: str
    environment_id: str
    kind: str
    redirect_to: str | None
    status: str
    verification_record: str = Field(description="TXT record name to create")
    verification_value: str
    verified_at: datetime | None
    certificate: str | None = Field(
        None,
        description="TLS mode: issued, or failed when Traefik got no certificate in time",
    )
    created_at: datetime
