"""API token shapes. The plaintext token appears only in TokenCreated, once."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["read", "deploy", "admin"]


def _all_scopes() -> list[Scope]:
    return ["read", "deploy", "admin"]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=100)
    scopes: list[Scope] = Field(default_factory=_all_scopes, min_length=1)
    team_id: str | None = Field(None, min_length=1, max_length=32)
    expires_days: int | None = Field(None, ge=1, le=3650)


class TokenRead(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    team_id: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class TokenCreated(TokenRead):
    token: str = Field(description="The token itself; shown once, store it now")


class UserRead(BaseModel):
    id: str
    email: str
    name: str
    is_admin: bool
