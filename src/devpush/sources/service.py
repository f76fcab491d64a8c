"""A project's git source settings: the read view and the deploy hook
(a secret URL that deploys a branch; only the token's SHA-256 is stored)."""

from __future__ import annotations

import hmac
import secrets
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import hash_secret
from devpush.errors import NotFound
from devpush.projects.models import Project
from devpush.projects.repository import is_github, kind
from devpush.settings import Settings
from devpush.sources.schemas import GitSourceRead

HOOK_PREFIX = "dph_"


def push_url(settings: Settings, team_slug: str, project_slug: str) -> str:
    return f"{settings.app_url}/git/{team_slug}/{project_slug}.git"


def read(settings: Settings, project: Project, team_slug: str) -> GitSourceRead:
    source: Literal["github", "git", "push"] = (
        "github" if is_github(project) else "git" if project.repo_url else "push"
    )
    return GitSourceRead(
        source=source,
        repo_url=project.repo_url,
        github_repository=project.github_repo_full_name,
        repo_status=project.repo_status,
        credentials=kind(project.repo_credentials_enc),
        push_url=push_url(settings, team_slug, project.slug),
        allowed_forks=list(project.allowed_forks or []),
        preview_deployments=project.preview_deployments,
        deploy_hook=project.deploy_hook_token_hash is not None,
    )


def create_deploy_hook(*, project: Project) -> str:
    """A new secret token for the project's deploy hook (replacing any old one)."""
    token = HOOK_PREFIX + secrets.token_urlsafe(32)
    project.deploy_hook_token_hash = hash_secret(token)
    return token


def delete_deploy_hook(*, project: Project) -> None:
    project.deploy_hook_token_hash = None


async def project_for_hook(*, session: AsyncSession, project_id: str, token: str) -> Project:
    """The project whose deploy hook `token` is, or NotFound (the same for every mismatch)."""
    project = await session.get(Project, project_id) if len(project_id) <= 32 else None
    stored = project.deploy_hook_token_hash if project is not None else None
    given = hash_secret(token) if 0 < len(token) <= 200 else ""
    if (
        project is None
        or project.status == "deleting"
        or stored is None
        or not hmac.compare_digest(stored, given)
    ):
        raise NotFound("no such deploy hook")
    return project
