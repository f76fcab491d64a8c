"""Deployment API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from devpush.projects.schemas import _branch


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branch: Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_branch)] | None = (
        None
    )
    commit_sha: str | None = Field(None, pattern=r"^[0-9a-f]{7,64}$")


class DeploymentRead(BaseModel):
    id: str
    project_id: str
    environment_id: str | None
    branch: str
    commit_sha: str | None
    commit_message: str | None
    commit_author: str | None
    trigger: str
    pr_number: int | None
    status: str
    conclusion: str | None
    error: str | None
    # After its live app exited: "restarting" (route pulled, restarted with backoff) or
    # "crashed" (exited too often; its URLs answer 503), with the last exit code and, once
    # crashed, its last log lines. None while it serves normally.
    instance_health: str | None = None
    exit_code: int | None = None
    crash_log: list[str] | None = None
    replicas: int = Field(1, description="Instances serving it now (replica 0 included)")
    runtime: str
    config: dict[str, object]
    urls: dict[str, str]
    created_at: datetime
    prepare_started_at: datetime | None
    deploy_started_at: datetime | None
    ready_at: datetime | None
    concluded_at: datetime | None
    timings: dict[str, float]


class DeploymentPage(BaseModel):
    items: list[DeploymentRead]
    next_cursor: str | None


class PlanRead(BaseModel):
    """What a deployment of `branch` would do now: the detected build plan."""

    branch: str
    commit_sha: str
    plan: dict[str, Any]
    lines: list[str]  # the plan as printed first in the build log
