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


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


class InviteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320)
    role: Role = Role.member


class InviteRead(BaseModel):
    id: str
    email: str
    role: Role
    invited_by: str | None
    expires_at: datetime
    expired: bool
    created_at: datetime
    url: str | None = Field(
        default=None,
        description="The invitation link, only in the answer to creating or resending an "
        "invite when the platform has no mail server (DEVPUSH_SMTP_URL): hand it to the "
        "invitee yourself. It is never logged, and not shown again.",
    )
