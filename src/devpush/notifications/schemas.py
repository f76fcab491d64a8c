"""Notification API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["webhook", "slack", "discord", "email"]
Ref = Annotated[str, Field(min_length=1, max_length=100)]
EventName = Annotated[str, Field(min_length=1, max_length=64)]


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Kind
    url: str | None = Field(None, max_length=2000, description="webhook, slack and discord")
    email: str | None = Field(None, max_length=320, description="email channels")
    events: list[EventName] = Field(min_length=1, max_length=20)
    projects: list[Ref] = Field(
        default_factory=list, max_length=100, description="Project ids or names; empty: all"
    )
    environments: list[Ref] = Field(
        default_factory=list, max_length=50, description="Environment names or ids; empty: all"
    )
    enabled: bool = True


class ChannelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, max_length=2000)
    email: str | None = Field(None, max_length=320)
    events: list[EventName] | None = Field(None, min_length=1, max_length=20)
    projects: list[Ref] | None = Field(None, max_length=100)
    environments: list[Ref] | None = Field(None, max_length=50)
    enabled: bool | None = None


class ChannelRead(BaseModel):
    id: str
    team_id: str
    channel: str
    target: str = Field(description="The URL without its path, or the email address")
    events: list[str]
    projects: list[str]
    environments: list[str]
    enabled: bool
    state: str = Field(description="ok, or failing after several failed attempts in a row")
    consecutive_failures: int
    created_by: str | None
    created_at: datetime


class ChannelCreated(ChannelRead):
    secret: str | None = Field(
        description="The webhook's signing secret (X-Devpush-Signature); shown only now"
    )


class DeliveryRead(BaseModel):
    id: str
    channel_id: str
    event_id: int | None
    event: str
    status: str
    attempts: int
    last_error: str | None
    response_code: int | None
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryRead]
    next_cursor: str | None
