"""Deployments and aliases: creation with snapshots, status transitions, alias switching and
rollback/promote targets (the lists are listing.py). Touches only the deployments domain's
tables (it reads projects through the projects service)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devpush import crypto
from devpush.db import session_scope, utcnow
from devpush.deployments.models import (
    ACTIVE_STATUSES,
    Alias,
    AliasType,
    Conclusion,
    Deployment,
    InstanceHealth,
    Status,
)
from devpush.errors import Conflict, NotFound
from devpush.naming import label
from devpush.projects import env as env_vars
from devpush.projects import service as projects
from devpush.projects.models import Environment, Project
from devpush.settings import Settings


class AliasSpec(NamedTuple):
    """A hostname label a deployment is served under. A tuple, not a dataclass: lists build
    four per item, and a frozen dataclass costs several times as much to make."""

    type: AliasType
    value: str
    environment_id: str | None = None
    branch: str | None = None


class EnvironmentLike(Protocol):
    """What an alias needs of an environment: an Environment, or an EnvironmentRef."""

    @property
    def id(self) -> str: ...
    @property
    def slug(self) -> str: ...
    @property
    def is_production(self) -> bool: ...


class Slugged(Protocol):
    """What an alias needs of a project: a Project, or a ProjectRef."""

    @property
    def slug(self) -> str: ...


# A deployment as the API shows it: the ORM object, or a ListedDeployment.
Listed = Deployment | Any


def default_runtime(settings: Settings) -> str:
    if settings.runtime:
        return settings.runtime
    return "docker" if settings.docker_host else "process"


def snapshot_config(project: Project, settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "port": 8000,
        "health_path": "/",
        "cpus": settings.default_cpus,
        "memory_mb": settings.default_memory_mb,
        "root_directory": "",
    }
    config.update(project.config)
    config["runtime"] = project.config.get("runtime") or default_runtime(settings)
    return config


async def create(
    *,
    session: AsyncSession,
    settings: Settings,
    project: Project,
    branch: str,
    trigger: str,
    commit_sha: str | None = None,
    created_by: str | None = None,
    pr_number: int | None = None,
    environment: Environment | None = None,
) -> tuple[Deployment, list[Deployment]]:
    """Create a deployment with its config and env snapshot. Returns it and the older
    deployments of the same branch it supersedes (now concluded `skipped`)."""
    if project.status != "active":
        raise Conflict(f"project {project.name} is {project.status}; resume it to deploy")
    if environment is None and pr_number is None:  # a PR never takes a branch's environment
        environment = await projects.match_environment(
            session=session, project_id=project.id, branch=branch
        )
    env, secret_keys = await env_vars.resolve_env(
        session=session,
        project_id=project.id,
        environment_id=environment.id if environment else None,
        preview=environment is None or pr_number is not None,
    )
    config = snapshot_config(project, settings)
    deployment = Deployment(
        project_id=project.id,
        environment_id=environment.id if environment else None,
        branch=branch,
        commit_sha=commit_sha,
        trigger=trigger,
        pr_number=pr_number,
        status=Status.prepare,
        config=config,
        env_enc=crypto.encrypt_json(env),
        secret_keys=secret_keys,
        runtime=config["runtime"],
        created_by=created_by,
        timings={},
    )
    session.add(deployment)
    await session.flush()
    superseded = await supersede(session=session, deployment=deployment)
    return deployment, superseded


async def supersede(*, session: AsyncSession, deployment: Deployment) -> list[Deployment]:
    """Conclude older deployments of the same project/branch still preparing or deploying."""
    rows = await session.scalars(
        select(Deployment)
        .where(
            Deployment.project_id == deployment.project_id,
            Deployment.branch == deployment.branch,
            Deployment.pr_number.is_(None)
            if deployment.pr_number is None
            else Deployment.pr_number == deployment.pr_number,
            Deployment.id != deployment.id,
            Deployment.status.in_((Status.prepare, Status.deploy)),
            Deployment.created_at <= deployment.created_at,
        )
        .with_for_update()
    )
    skipped = []
    for old in rows:
        conclude(old, Conclusion.skipped, f"superseded by deployment {deployment.id[:7]}")
        skipped.append(old)
    return skipped


def conclude(deployment: Deployment, conclusion: Conclusion, error: str | None = None) -> None:
    deployment.status = Status.completed
    deployment.conclusion = conclusion
    deployment.concluded_at = utcnow()
    if error:
        deployment.error = error[:4000]


def is_concluded(deployment: Deployment) -> bool:
    return deployment.status == Status.completed


async def snapshot(
    sessions: async_sessionmaker[AsyncSession], deployment_id: str
) -> Deployment | None:
    """The row as it is now, read in a session of its own (its attributes stay loaded)."""
    async with session_scope(sessions) as session:
        return await session.get(Deployment, deployment_id)


async def get(*, session: AsyncSession, deployment_id: str, lock: bool = False) -> Deployment:
    stmt = select(Deployment).where(Deployment.id == deployment_id)
    if lock:
        stmt = stmt.with_for_update()
    deployment = await session.scalar(stmt)
    if deployment is None:
        raise NotFound("no such deployment")
    return deployment


def env_snapshot(deployment: Deployment) -> dict[str, str]:
    value: dict[str, str] = crypto.decrypt_json(deployment.env_enc)
    return value


# ---- queries ---------------------------------------------------------------------------
async def last_succeeded_commit(
    *, session: AsyncSession, project_id: str, branch: str
) -> str | None:
    return await session.scalar(
        select(Deployment.commit_sha)
        .where(
            Deployment.project_id == project_id,
            Deployment.branch == branch,
            Deployment.conclusion == Conclusion.succeeded,
        )
        .order_by(Deployment.created_at.desc())
        .limit(1)
    )


async def active_ids(*, session: AsyncSession, status: Status | None = None) -> list[str]:
    stmt = select(Deployment.id).where(
        Deployment.status == status if status else Deployment.status.in_(ACTIVE_STATUSES)
    )
    return list(await session.scalars(stmt))


# ---- aliases ---------------------------------------------------------------------------
def alias_specs(
    project: Slugged, deployment: Listed, environment: EnvironmentLike | None
) -> list[AliasSpec]:
    """Every hostname label a deployment is served under (DESIGN.md's table)."""
    slug = project.slug
    specs = [AliasSpec(AliasType.deployment, f"{slug}-id-{deployment.id[:7]}")]
    if deployment.pr_number is not None:
        specs.append(AliasSpec(AliasType.pr, f"{slug}-pr-{deployment.pr_number}"))
        return specs
    specs.append(
        AliasSpec(
            AliasType.branch,
            # the raw branch: label() hashes it when it has to shorten, so two long branches
            # that share a prefix keep distinct hostnames
            label(slug, "branch", deployment.branch),
            branch=deployment.branch,
        )
    )
    if environment is not None:
        env_label = slug if environment.is_production else f"{slug}-env-{environment.slug}"
        specs.append(AliasSpec(AliasType.environment, env_label, environment_id=environment.id))
        specs.append(
            AliasSpec(
                AliasType.environment_id,
                f"{slug}-env-id-{environment.id}",
                environment_id=environment.id,
            )
        )
    return specs


async def point_aliases(
    *, session: AsyncSession, project_id: str, specs: list[AliasSpec], deployment_id: str
) -> list[Alias]:
    """Make each alias serve `deployment_id`, keeping the one it replaces as `previous`."""
    changed = []
    for spec in specs:
        alias = await session.scalar(
            select(Alias).where(Alias.value == spec.value).with_for_update()
        )
        if alias is None:
            alias = Alias(
                project_id=project_id,
                type=spec.type,
                value=spec.value,
                environment_id=spec.environment_id,
                branch=spec.branch,
            )
            session.add(alias)
        elif alias.project_id != project_id:
            raise Conflict(f"the hostname {spec.value} belongs to another project")
        if alias.deployment_id != deployment_id:
            alias.previous_deployment_id = alias.deployment_id
            alias.deployment_id = deployment_id
            changed.append(alias)
    await session.flush()
    return changed


async def health_of_hostname(*, session: AsyncSession, label: str) -> InstanceHealth | None:
    """The instance health of the deployment an alias label points at (the catch-all's 503
    page for a restarting or crashed app), or None."""
    health: InstanceHealth | None = await session.scalar(
        select(Deployment.instance_health)
        .join(Alias, Alias.deployment_id == Deployment.id)
        .where(Alias.value == label)
    )
    return health


async def project_aliases(*, session: AsyncSession, project_id: str) -> list[Alias]:
    return list(await session.scalars(select(Alias).where(Alias.project_id == project_id)))


async def environment_aliases(*, session: AsyncSession, environment_id: str) -> list[Alias]:
    rows = await session.scalars(
        select(Alias).where(
            Alias.environment_id == environment_id,
            Alias.type.in_((AliasType.environment, AliasType.environment_id)),
        )
    )
    return list(rows)


async def warm_deployment_ids(*, session: AsyncSession, project_id: str | None = None) -> set[str]:
    """Deployments a branch, environment or PR alias points at now or just before: these stay
    running. A deployment's own `-id-` alias never moves, so it keeps nothing warm; older
    deployments are cleaned up and their own URL stops being served."""
    stmt = select(Alias.deployment_id, Alias.previous_deployment_id).where(
        Alias.type != AliasType.deployment
    )
    if project_id:
        stmt = stmt.where(Alias.project_id == project_id)
    warm: set[str] = set()
    for current, previous in await session.execute(stmt):
        warm.update(i for i in (current, previous) if i)
    return warm


async def remove_aliases(
    *,
    session: AsyncSession,
    project_id: str,
    branch: str | None = None,
    pr_number: int | None = None,
) -> list[str]:
    """Drop a branch's (or a PR's) own aliases; returns their labels."""
    conditions = [Alias.project_id == project_id]
    if pr_number is not None:
        conditions.append(Alias.type == AliasType.pr)
        conditions.append(Alias.value.like(f"%-pr-{pr_number}"))
    else:
        conditions.append(Alias.type == AliasType.branch)
        conditions.append(Alias.branch == branch)
    rows = list(await session.scalars(select(Alias).where(*conditions)))
    for alias in rows:
        await session.delete(alias)
    return [a.value for a in rows]


def urls(settings: Settings, aliases: list[Alias] | list[AliasSpec]) -> dict[str, str]:
    # one settings.deploy_url per deployment instead of one per alias
    scheme, _, suffix = settings.deploy_url("").partition("://")
    return {a.type.value: f"{scheme}://{a.value}{suffix}" for a in aliases}


# ---- restore (a backup brought onto a fresh machine) -------------------------------------
async def serving_deployments(*, session: AsyncSession) -> list[Deployment]:
    """The deployments a branch, PR or environment alias points at now (a deployment's own
    id alias does not count: every old deployment keeps one), one per project branch (or PR):
    the one an environment serves wins over a branch's newer one, so a rollback survives."""
    rows = await session.execute(
        select(Alias.type, Deployment)
        .join(Deployment, Deployment.id == Alias.deployment_id)
        .where(Alias.type != AliasType.deployment)
        .order_by(Deployment.created_at)
    )
    chosen: dict[tuple[str, str, int | None], Deployment] = {}
    pinned: set[tuple[str, str, int | None]] = set()
    for alias_type, deployment in rows:
        key = (deployment.project_id, deployment.branch, deployment.pr_number)
        if key in pinned:
            continue
        chosen[key] = deployment
        if alias_type == AliasType.environment:
            pinned.add(key)
    return sorted(chosen.values(), key=lambda d: d.created_at)


async def forget_instances(*, session: AsyncSession) -> int:
    """Drop every recorded runtime handle and upstream: after a restore none of those instances
    exists here, and no route or monitor may aim at them. Returns how many were dropped."""
    rows = list(
        await session.scalars(
            select(Deployment).where(
                Deployment.runtime_handle.is_not(None) | Deployment.upstream.is_not(None)
            )
        )
    )
    forgotten = 0
    for deployment in rows:
        if deployment.runtime_handle is None and deployment.upstream is None:
            continue  # a JSON null handle, already forgotten
        deployment.runtime_handle = None
        deployment.upstream = None
        deployment.replicas = []
        forgotten += 1
    return forgotten
