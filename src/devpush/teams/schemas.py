"""Team API shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from devpush.teams.models import Role


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)


class TeamRead(BaseModel):
    id: str
    slug: str
    name: str
    personal: bool
    role: Role
    created_at: datetime


class MemberRead(BaseModel):
    user_id: str
    email: str
    name: str
    role: Role
