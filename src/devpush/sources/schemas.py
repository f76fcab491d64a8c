"""API shapes of a project's git source: where it deploys from, and its deploy hook."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class GitSourceRead(BaseModel):
    source: Literal["github", "git", "push"]
    repo_url: str | None
    github_repository: str | None
    repo_status: str | None  # None, or why the source does not work (disconnected, deleted)
    credentials: Literal["token", "ssh_key"] | None  # the kind stored; never the secret
    push_url: str  # the platform's own remote; pushes deploy when there is no repo_url
    allowed_forks: list[str]
    preview_deployments: bool
    deploy_hook: bool


class DeployHookCreated(BaseModel):
    url: str  # shown once: holds the secret token


class DeployHookAnswer(BaseModel):
    id: str
    branch: str
    status: str
    url: str
