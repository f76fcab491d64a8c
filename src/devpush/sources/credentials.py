"""A project's repository credentials (an HTTPS token or an SSH deploy key), sealed with
Fernet in `projects.repo_credentials_enc` and opened only on the worker, for one fetch."""

from __future__ import annotations

from typing import Any, Literal

from devpush import crypto
from devpush.sources.git import Credentials


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
