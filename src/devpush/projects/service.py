"""Projects, environments and env vars. Env var values are Fernet-encrypted at rest."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ScalarResult, column, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.errors import Conflict, Invalid, NotFound
from devpush.naming import reserved_word_in, slugify
from devpush.platform import Platform
from devpush.projects import env as env_vars
from devpush.projects import repository
from devpush.projects.models import Environment, Project
from devpush.projects.schemas import (
    EnvironmentIn,
    ProjectCreate,
    ProjectUpdate,
    RepoCredentials,
)
from devpush.runtime.base import VolumeUsage

CONFIG_KEYS = (
    "build_command",
    "pre_deploy_command",
    "start_command",
    "root_directory",
    "port",
    "health_path",
    "cpus",
    "memory_mb",
    "build_memory_mb",
    "build_cpus",
    "build_timeout",
    "replicas",
    "runtime",
    "image",
    "volumes",
    "cron",
)


def _config_value(value: Any) -> Any:
    """As stored in the JSON config: volumes and cron jobs as plain dicts."""
    if isinstance(value, list):
        return [v.model_dump() if hasattr(v, "model_dump") else v for v in value]
    return value


async def _free_slug(session: AsyncSession, name: str) -> str:
    base = slugify(name, max_length=30)
    word = reserved_word_in(base)
    if word is not None:
        raise Invalid(
            f"the name {name!r} gives the hostname {base!r}, whose part '-{word}-' belongs to "
            f"the preview hostnames of other projects (-id-, -pr-, -branch-, -env- are "
            "reserved); choose a name without it"
        )
    slug, n = base, 1
    while await session.scalar(select(Project.id).where(Project.slug == slug)):
        n += 1
        slug = f"{base[:26].rstrip('-')}-{n}"
    return slug


def _config_from(body: ProjectCreate | ProjectUpdate) -> dict[str, Any]:
    return {k: _config_value(getattr(body, k)) for k in CONFIG_KEYS if getattr(body, k) is not None}


def _sealed(value: RepoCredentials | None) -> str | None:
    return repository.seal(value.model_dump() if value else None)


def _update_source(project: Project, body: ProjectUpdate) -> None:
    if "repo_url" in body.model_fields_set and body.repo_url != project.repo_url:
        project.repo_url = body.repo_url
        # A new address gets neither the old one's credentials nor its GitHub link.
        project.repo_credentials_enc = project.repo_status = project.github_repo_full_name = None
        project.github_installation_id = project.github_repo_id = None
    if "repo_credentials" in body.model_fields_set:
        project.repo_credentials_enc = _sealed(body.repo_credentials)
    if "allowed_forks" in body.model_fields_set:
        project.allowed_forks = body.allowed_forks or []


async def create_project(*, session: AsyncSession, team_id: str, body: ProjectCreate) -> Project:
    if await session.scalar(
        select(Project.id).where(Project.team_id == team_id, Project.name == body.name)
    ):
        raise Conflict(f"this team already has a project named {body.name!r}")
    project = Project(
        team_id=team_id,
        name=body.name,
        slug=await _free_slug(session, body.name),
        repo_url=body.repo_url,
        production_branch=body.production_branch or "main",
        config=_config_from(body),
        preview_deployments=True if body.preview_deployments is None else body.preview_deployments,
        log_retention_days=body.log_retention_days,
        allowed_forks=body.allowed_forks or [],
        repo_credentials_enc=_sealed(body.repo_credentials),
    )
    session.add(project)
    await session.flush()
    session.add(
        Environment(
            project_id=project.id,
            name="production",
            slug="production",
            branch_pattern=project.production_branch,
            is_production=True,
        )
    )
    await _replace_environments(session, project.id, body.environments or [])
    await env_vars.set_env_vars(session=session, project_id=project.id, values=body.env_vars or {})
    await session.flush()
    return project


async def _replace_environments(
    session: AsyncSession, project_id: str, environments: list[EnvironmentIn]
) -> None:
    existing = {
        e.slug: e
        for e in await session.scalars(
            select(Environment).where(
                Environment.project_id == project_id, Environment.is_production.is_(False)
            )
        )
    }
    wanted = {e.name: e for e in environments}
    for slug, env in existing.items():
        if slug not in wanted:
            await session.delete(env)
    for position, env_in in enumerate(environments, start=1):
        row = existing.get(env_in.name)
        if row is None:
            session.add(
                Environment(
                    project_id=project_id,
                    name=env_in.name,
                    slug=env_in.name,
                    branch_pattern=env_in.branch_pattern,
                    position=position,
                    replicas=env_in.replicas,
                )
            )
        else:
            row.branch_pattern = env_in.branch_pattern
            row.position = position
            if "replicas" in env_in.model_fields_set:  # else kept (`devpush scale` set it)
                row.replicas = env_in.replicas


async def update_project(
    *, session: AsyncSession, project: Project, body: ProjectUpdate
) -> Project:
    if body.name is not None and body.name != project.name:
        if await session.scalar(
            select(Project.id).where(Project.team_id == project.team_id, Project.name == body.name)
        ):
            raise Conflict(f"this team already has a project named {body.name!r}")
        project.name = body.name
    _update_source(project, body)
    if body.production_branch is not None:
        project.production_branch = body.production_branch
        production = await session.scalar(
            select(Environment).where(
                Environment.project_id == project.id, Environment.is_production.is_(True)
            )
        )
        if production is not None:
            production.branch_pattern = body.production_branch
    config = dict(project.config)
    for key in CONFIG_KEYS:
        if key in body.model_fields_set:
            value = getattr(body, key)
            if value is None or value == "" or value == []:
                config.pop(key, None)
            else:
                config[key] = _config_value(value)
    project.config = config
    if body.preview_deployments is not None:
        project.preview_deployments = body.preview_deployments
    if "log_retention_days" in body.model_fields_set:
        project.log_retention_days = body.log_retention_days
    if body.environments is not None:
        await _replace_environments(session, project.id, body.environments)
    if body.env_vars is not None:
        await env_vars.set_env_vars(session=session, project_id=project.id, values=body.env_vars)
    await session.flush()
    return project


async def get_project(*, session: AsyncSession, project_id: str) -> Project:
    project = await session.get(Project, project_id)
    if project is None or project.status == "deleting":
        raise NotFound("no such project")
    return project


async def list_projects(*, session: AsyncSession, team_id: str) -> list[Project]:
    rows = await session.scalars(
        select(Project)
        .where(Project.team_id == team_id, Project.status != "deleting")
        .order_by(Project.created_at)
    )
    return list(rows)


async def list_environments(*, session: AsyncSession, project_id: str) -> list[Environment]:
    rows = await session.scalars(
        select(Environment)
        .where(Environment.project_id == project_id)
        .order_by(Environment.is_production.desc(), Environment.position)
    )
    return list(rows)


def pattern_matches(pattern: str, branch: str) -> bool:
    """`*` matches any run of characters (including '/'); everything else is literal."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, branch) is not None


async def match_environment(
    *, session: AsyncSession, project_id: str, branch: str
) -> Environment | None:
    """The first environment whose pattern matches: production first, then in order."""
    for env in await list_environments(session=session, project_id=project_id):
        if pattern_matches(env.branch_pattern, branch):
            return env
    return None


def set_paused(*, project: Project, paused: bool) -> None:
    """Paused projects keep serving what they serve, but take no new deployments."""
    project.status = "paused" if paused else "active"


async def volume_usage(p: Platform, project_id: str) -> list[tuple[str, VolumeUsage]]:
    """Every copy of the project's volumes that holds data, with the runtime that holds it."""
    found: list[tuple[str, VolumeUsage]] = []
    for runtime in p.runtimes.available():
        found += [(runtime, used) for used in await p.runtimes.get(runtime).volumes(project_id)]
    return found


async def check_deletion(
    *, p: Platform, session: AsyncSession, project: Project, delete_volumes: bool
) -> None:
    """Deleting a project deletes its volumes' data and its managed databases too: only when
    asked for explicitly."""
    if delete_volumes:
        return
    held = sorted({used.name for _, used in await volume_usage(p, project.id)})
    # databases/ sits above projects/: its table, not its model
    managed = table("managed_databases", column("project_id"), column("name"))
    names: ScalarResult[str] = await session.scalars(
        select(managed.c.name).where(managed.c.project_id == project.id)
    )
    held += [f"database {name}" for name in names]
    if held:
        raise Conflict(
            f"{project.name} keeps data in {', '.join(held)}, which deleting it deletes too; "
            "back it up first, then delete with delete_volumes=true (CLI: --delete-volumes)"
        )
