"""A project's repository: where its code may come from (the platform's push remote, GitHub,
any git URL, file:// only where allowed) and its credentials (an HTTPS token or an SSH deploy
key), sealed with Fernet in `projects.repo_credentials_enc` and opened only on the worker, for
one fetch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from devpush import crypto
from devpush.errors import Forbidden, Invalid
from devpush.git import Credentials
from devpush.projects.models import Project
from devpush.settings import Settings


def seal(values: dict[str, Any] | None) -> str | None:
    """Encrypt validated credentials (see projects.schemas.RepoCredentials); None clears."""
    if not values:
        return None
    kept = {k: v for k, v in values.items() if v}
    return crypto.encrypt_json(kept) if kept else None


def unseal(sealed: str | None) -> Credentials | None:
    if not sealed:
        return None
    data = crypto.decrypt_json(sealed)
    return Credentials(
        username=str(data.get("username") or "git"),
        token=str(data.get("token") or ""),
        ssh_key=str(data.get("ssh_key") or ""),
        known_hosts=str(data.get("known_hosts") or ""),
    )


def kind(sealed: str | None) -> Literal["token", "ssh_key"] | None:
    """ "token", "ssh_key" or None: what a project has, without showing it."""
    credentials = unseal(sealed)
    if credentials is None:
        return None
    return "ssh_key" if credentials.ssh_key else "token"


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
