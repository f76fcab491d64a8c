"""Where the worker fetches a deployment's code from, and with which credentials: the GitHub
repository (an installation token), any git URL (the project's stored token or deploy key), or
the platform's own push remote (a local bare repository)."""

from __future__ import annotations

from dataclasses import dataclass

from devpush.deployments.models import Deployment
from devpush.errors import Conflict, NotConfigured
from devpush.git import Credentials
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.projects.repository import (
    check_local_url,
    github_clone_url,
    is_github,
    push_repo,
    unseal,
)

GITHUB_USERNAME = "x-access-token"


@dataclass(frozen=True)
class Remote:
    url: str
    ref: str
    credentials: Credentials | None = None


async def for_deployment(p: Platform, project: Project, deployment: Deployment) -> Remote:
    branch_ref = f"refs/heads/{deployment.branch}"
    if is_github(project):
        assert project.github_installation_id and project.github_repo_full_name
        if project.repo_status:
            raise Conflict(
                f"the GitHub repository {project.github_repo_full_name} is "
                f"{project.repo_status}; reconnect the project to a repository"
            )
        if p.installation_token is None:
            raise NotConfigured("this process has no GitHub App wired in (see bootstrap.py)")
        token = await p.installation_token(p=p, installation_id=project.github_installation_id)
        ref = branch_ref
        if deployment.pr_number is not None:
            # Works for forks too: GitHub keeps every pull request's head in the base repo.
            ref = f"refs/pull/{deployment.pr_number}/head"
        return Remote(
            url=github_clone_url(p.settings, project.github_repo_full_name),
            ref=ref,
            credentials=Credentials(username=GITHUB_USERNAME, token=token),
        )
    if project.repo_url:
        check_local_url(p.settings, project.repo_url)
        return Remote(
            url=project.repo_url,
            ref=branch_ref,
            credentials=unseal(project.repo_credentials_enc),
        )
    return Remote(url=str(push_repo(p.settings, project.id)), ref=branch_ref)
