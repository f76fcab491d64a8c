"""The push remote's plumbing: finding (and authorizing) the project behind a remote path,
creating its bare repository, installing the fixed post-receive hook, and building the
`git http-backend` environment. The hook learns who pushed to which project, and how to reach
the platform, only from that environment; nothing a pusher sends becomes a command."""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import git
from devpush.auth.service import Principal
from devpush.errors import NotFound
from devpush.projects.models import Project
from devpush.projects.repository import push_repo
from devpush.runstate import database_url, redis_url
from devpush.settings import Settings
from devpush.teams.access import Action, load_team

SERVICES = {"git-upload-pack": Action.read, "git-receive-pack": Action.deploy}
HOOK = """#!/bin/sh
# devpush post-receive hook (generated; every push to a devpush remote runs it)
exec "$DEVPUSH_HOOK_PYTHON" -P -m devpush.git_remote.hook
"""
# Settings the hook never needs: they stay out of its environment.
PRIVATE_SETTINGS = {"github_app_private_key", "github_webhook_secret", "smtp_url"}
GIT_PROTOCOL = re.compile(r"^[A-Za-z0-9=:.,_-]{1,100}$")
MAX_PUSH = "2g"


def service_of(path: str, method: str, query_service: str | None) -> str | None:
    """The smart-HTTP service a request is for (dumb HTTP is not served)."""
    if path == "info/refs" and method == "GET" and query_service in SERVICES:
        return query_service
    if path in SERVICES and method == "POST":
        return path
    return None


def basic_token(header: str | None) -> str | None:
    """The API token of an `Authorization: Basic` (any username) or `Bearer` header."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


async def load_remote(
    *, session: AsyncSession, principal: Principal, team: str, project: str, action: Action
) -> Project:
    row = await load_team(session=session, principal=principal, team_ref=team, action=action)
    found = await session.scalar(
        select(Project).where(
            Project.team_id == row.id, Project.slug == project, Project.status != "deleting"
        )
    )
    if found is None:
        raise NotFound("no such project")
    return found


async def ensure_repo(settings: Settings, project: Project) -> Path:
    path = push_repo(settings, project.id)
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        await git.run_git(
            "init", "--bare", "--quiet", "--initial-branch", project.production_branch, str(path)
        )
    return path


def hooks_dir(settings: Settings) -> Path:
    """The hooks every push remote uses (core.hooksPath): written once, never user data."""
    path = settings.data_path / "git" / "hooks"
    hook = path / "post-receive"
    if not hook.exists() or hook.read_text() != HOOK or hook.stat().st_mode & 0o077:
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".post-receive.{os.getpid()}"
        tmp.write_text(HOOK)
        tmp.chmod(0o700)  # git runs it as the platform's user; nobody else needs it
        os.replace(tmp, hook)
    return path


def settings_env(settings: Settings) -> dict[str, str]:
    """The app's settings as DEVPUSH_* variables, so the hook builds the same Settings."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None and name not in PRIVATE_SETTINGS:
            env[f"DEVPUSH_{name.upper()}"] = str(value)
    env["DEVPUSH_DATA_DIR"] = str(settings.data_path)
    env["DEVPUSH_DATABASE_URL"] = database_url(settings)
    env["DEVPUSH_REDIS_URL"] = redis_url(settings)
    return env


def backend_env(
    *,
    settings: Settings,
    project: Project,
    principal: Principal,
    service: str,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    ip: str | None,
) -> dict[str, str]:
    config = {
        "core.hooksPath": str(hooks_dir(settings)),
        "http.uploadpack": "true",
        "http.receivepack": "true" if service == "git-receive-pack" else "false",
        "receive.advertisePushOptions": "true",
        "receive.fsckObjects": "true",
        "receive.maxInputSize": MAX_PUSH,
        "uploadpack.allowFilter": "true",
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(settings.data_path / "git"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_PROJECT_ROOT": str(push_repo(settings, project.id).parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{project.id}.git/{path}",
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
        "CONTENT_TYPE": headers.get("content-type", ""),
        "REMOTE_USER": principal.user_id,
        "REMOTE_ADDR": ip or "",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if headers.get("content-length", "").isdigit():
        env["CONTENT_LENGTH"] = headers["content-length"]
    if headers.get("content-encoding", "") in ("gzip", "x-gzip"):
        env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
    if GIT_PROTOCOL.match(headers.get("git-protocol", "")):
        env["HTTP_GIT_PROTOCOL"] = headers["git-protocol"]
    if service == "git-receive-pack":
        env.update(settings_env(settings))
        env.update(
            {
                "DEVPUSH_HOOK_PYTHON": sys.executable,
                "DEVPUSH_HOOK_PROJECT_ID": project.id,
                "DEVPUSH_HOOK_USER_ID": principal.user_id,
                "DEVPUSH_HOOK_TOKEN_ID": principal.token_id or "",
                "DEVPUSH_HOOK_IP": ip or "",
            }
        )
    return env
