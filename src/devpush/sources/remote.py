"""Where the worker fetches a deployment's code from, and with which credentials: the GitHub
repository (an installation token), any git URL (the project's stored token or deploy key), or
the platform's own push remote (a local bare repository)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from devpush.deployments.models import Deployment
from devpush.errors import Conflict, Forbidden, Invalid
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.settings import Settings
from devpush.sources import credentials
from devpush.sources.git import Credentials

GITHUB_USERNAME = "x-access-token"


@dataclass(frozen=True)
class Remote:
    url: str
    ref: str
    credentials: Credentials | None = None


def push_repo(settings: Settings, project_id: str) -> Path:
    """The bare repository the push remote stores into (and the worker fetches from)."""
    return settings.data_path / "repos" / f"{project_id}.git"


def github_clone_url(settings: Settings, full_name: str) -> str:
    return f"{settings.github_url.rstrip('/')}/{full_name}.git"


def is_github(project: Project) -> bool:
    return bool(project.github_installation_id and project.github_repo_full_name)


def check_local_url(settings: Settings, url: str, *, admin: bool | None = None) -> None:
    """file:// sources read the worker's own disk: only where the operator allows them
    (DEVPUSH_ALLOW_FILE_REPOS), only for platform admins (`admin`; None at deploy time, when
    the project's URL was checked as it was saved), and never into devpush's data directory
    (other teams' push repositories, keys, the database). The path is checked as git reads it:
    percent-decoded, then resolved with symlinks followed."""
    if not url.startswith("file:"):
        return
    if not settings.allow_file_repos:
        raise Invalid(
            "file:// repositories are disabled on this platform "
            "(DEVPUSH_ALLOW_FILE_REPOS); use an https:// or ssh:// URL"
        )
    if admin is False:
        raise Forbidden("only platform admins may use file:// repositories")
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query:
        raise Invalid("a file:// repository URL is file:///absolute/path")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or "\0" in str(path):
        raise Invalid("a file:// repository URL is file:///absolute/path")
    real = path.resolve()
    private = {settings.data_path.resolve(), settings.data_path.absolute()}
    if any(real.is_relative_to(root) or path.is_relative_to(root) for root in private):
        raise Invalid("a file:// repository cannot point inside devpush's data directory")


async def for_deployment(p: Platform, project: Project, deployment: Deployment) -> Remote:
    branch_ref = f"refs/heads/{deployment.branch}"
    if is_github(project):
        assert project.github_installation_id and project.github_repo_full_name
        if project.repo_status:
            raise Conflict(
                f"the GitHub repository {project.github_repo_full_name} is "
                f"{project.repo_status}; reconnect the project to a repository"
            )
        from devpush.github.service import installation_token

        token = await installation_token(p=p, installation_id=project.github_installation_id)
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
            credentials=credentials.unseal(project.repo_credentials_enc),
        )
    return Remote(url=str(push_repo(p.settings, project.id)), ref=branch_ref)
