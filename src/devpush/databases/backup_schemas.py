"""Managed database backup API shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class BackupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: str = Field(
        "production", min_length=1, max_length=100, description="The environment's name"
    )


class RestoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backup_id: str = Field(min_length=1, max_length=32, description="A backup of this database")


class BackupRead(BaseModel):
    id: str
    database_id: str
    environment_id: str | None
    environment: str | None = Field(description="The environment's name")
    status: str = Field(description="running, succeeded or failed")
    trigger: str = Field(description="manual, schedule or restore-point")
    size_bytes: int | None
    error: str | None = Field(description="Why a failed backup failed")
    created_at: datetime
    finished_at: datetime | None
