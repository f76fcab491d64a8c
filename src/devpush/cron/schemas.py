"""Cron API shapes: the declared jobs of each environment, and the runs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CronRunRead(BaseModel):
    id: str
    job: str
    environment_id: str
    environment: str | None  # its name; None when the environment is gone
    deployment_id: str | None
    command: str
    scheduled_at: datetime
    status: str = Field(description="queued|running|succeeded|failed|timed_out|skipped")
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None = Field(description="Seconds, once finished")
    exit_code: int | None
    error: str | None


class CronRunPage(BaseModel):
    items: list[CronRunRead]
    next_cursor: str | None


class CronJobRead(BaseModel):
    name: str
    environment: str
    environment_id: str
    deployment_id: str = Field(description="The live deployment the job runs in")
    schedule: str
    command: str
    timeout: int
    next_run_at: datetime
    last_run: CronRunRead | None
