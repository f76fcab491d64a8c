"""Managed database API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DatabaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["postgres", "sqlite"]
    name: str = Field(max_length=30, description="1-30 of a-z, 0-9 and _, starting with a letter")
    previews: Literal["none", "own"] = Field(
        "none", description="own: each preview branch gets an empty database of its own"
    )
    volume: str | None = Field(
        None, max_length=40, description="sqlite: the project's volume that holds the file"
    )
    env_var: str | None = Field(
        None,
        max_length=64,
        description="The variable apps read it from. Default: DATABASE_URL for the first "
        "database, <NAME>_DATABASE_URL after",
    )
    backup_schedule: str | None = Field(
        None, max_length=100, description="A cron expression (UTC) for automatic backups"
    )
    backup_retention: int = Field(7, ge=1, le=365, description="Backups kept per environment")


class DatabaseUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    previews: Literal["none", "own"] | None = None
    backup_schedule: str | None = Field(None, max_length=100)
    backup_retention: int | None = Field(None, ge=1, le=365)


class DatabaseCopyRead(BaseModel):
    id: str
    environment_id: str | None
    environment: str | None = Field(description="The environment's name; None for a preview")
    scope: str = Field(description="The environment id, or preview:<branch>")
    db_name: str | None = Field(description="postgres: the database and role name")


class DatabaseRead(BaseModel):
    id: str
    project_id: str
    name: str
    engine: str
    env_var: str
    previews: str
    volume: str | None
    path: str | None = Field(description="sqlite: the file's path inside the app")
    backup_schedule: str | None
    backup_retention: int
    created_at: datetime
    copies: list[DatabaseCopyRead]
