"""App-side deployment actions: create and enqueue, cancel, rollback, promote."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal
from devpush.deployments import routing, switches, traefik_wait
from devpush.deployments import service as deployments
from devpush.deployments.domain_events import status_payload
from devpush.deployments.finalize import Pointed, earlier_previous, not_loaded
from devpush.deployments.flows import system_log
from devpush.deployments.models import Conclusion, Deployment, InstanceHealth
from devpush.errors import Conflict, Invalid, ServiceUnavailable
from devpush.platform import Platform
from devpush.projects import volumes
from devpush.projects.models import Environment, Project
from devpush.proxy import traefik


async def create_and_enqueue(
    *,
    session: AsyncSession,
    p: Platform,
    principal: Principal | None,
    pr_number: int | None = None,
    project: Project,
    branch: str,
    commit_sha: str | None,
    trigger: str,
    ip: str | None,
) -> Deployment:
    """Create a deployment, commit, enqueue it and release what it supersedes. Every trigger
    (API, CLI, UI, webhooks, push remote) goes through here."""
    from devpush.audit.service import record
    from devpush.queue import abort_start, enqueue_delete_container, enqueue_start

    deployment, superseded = await deployments.create(
        session=session,
        settings=p.settings,
        project=project,
        branch=branch,
        trigger=trigger,
        commit_sha=commit_sha,
        created_by=principal.user_id if principal else None,
        pr_number=pr_number,
    )
    await record(
        session=session,
        principal=principal,
        action="deployment.create",
        resource_type="deployment",
        resource_id=deployment.id,
        team_id=project.team_id,
        ip=ip,
        data={"branch": branch, "trigger": trigger},
    )
    await session.commit()
    await enqueue_start(p.redis, deployment.id)
    for old in superseded:
        await abort_start(p.redis, old.id)
        await enqueue_delete_container(p.redis, old.id)
    return deployment


async def cancel(p: Platform, session: AsyncSession, deployment: Deployment) -> None:
    """Conclude an in-flight deployment `canceled`, abort its job, release its instance."""
    from devpush.queue import abort_start, enqueue_delete_container

    row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
    if deployments.is_concluded(row):
        raise Conflict(
            f"deployment {row.id[:7]} already concluded ({row.conclusion}); nothing to cancel"
        )
    deployments.conclude(row, Conclusion.canceled, "canceled by a user")
    await session.commit()
    await abort_start(p.redis, row.id)
    await enqueue_delete_container(p.redis, row.id)
    await system_log(p, row.id, "Deployment canceled")


async def _switch_environment(
    p: Platform,
    session: AsyncSession,
    project: Project,
    environment: Environment,
    target: Deployment,
    kind: str,
) -> None:
    """Point the environment's aliases at `target`, confirm Traefik serves it, then record
    `kind` (deployment.rolled_back or deployment.promoted); see `switches` for a process that
    dies in between."""
    if target.instance_health is not None:  # its app exited: its route is pulled
        raise Conflict(crash_conflict(target))
    running = target.runtime_handle and target.upstream  # no upstream: retiring
    if target.conclusion != Conclusion.succeeded or not running:
        raise Conflict(f"deployment {target.id[:7]} is not running any more; redeploy it instead")
    specs = [
        s
        for s in deployments.alias_specs(project, target, environment)
        if s.environment_id == environment.id
    ]
    pointed = Pointed(
        router=traefik.router_name(project.slug, target.id),
        hostname=f"{specs[0].value}.{p.settings.deploy_domain}",
        values=[s.value for s in specs],
        earlier=await earlier_previous(session, specs, target.id),
    )
    await deployments.point_aliases(
        session=session, project_id=project.id, specs=specs, deployment_id=target.id
    )
    await routing.sync_project(session=session, settings=p.settings, project_id=project.id)
    data = {
        **status_payload(target),
        "environment_id": environment.id,
        "environment": environment.name,
        "aliases": [s.value for s in specs],
    }
    switch_id = switches.record(
        session,
        project_id=project.id,
        deployment_id=target.id,
        kind=kind,
        pointed=pointed,
        data=data,
    ).id
    await session.commit()  # the aliases' locks go with it: Traefik is awaited without them
    served = await traefik_wait.wait_route_live(
        p, pointed.router, pointed.hostname, traefik_wait.ROUTE_TIMEOUT
    )
    switch = await switches.take(session, switch_id)
    kept = switch is not None and await switches.conclude(p, session, switch, served)
    await session.commit()
    if switch is not None and not served:
        raise ServiceUnavailable(not_loaded(pointed, kept))


def crash_conflict(target: Deployment) -> str:
    code = f" with code {target.exit_code}" if target.exit_code is not None else ""
    if target.instance_health == InstanceHealth.crashed:
        return (
            f"deployment {target.id[:7]} crashed (its app exited{code} too often); "
            "redeploy it once fixed, or roll back to another deployment"
        )
    return (
        f"deployment {target.id[:7]} is restarting (its app exited{code}); try again once it serves"
    )


async def rollback(
    p: Platform, session: AsyncSession, deployment: Deployment, project: Project
) -> Deployment:
    """Serve an older deployment on its environment again. Called on the environment's current
    deployment, it goes back to the previous one; called on an older one, it serves that."""
    if not deployment.environment_id:
        raise Invalid("this deployment has no environment (a preview); promote it instead")
    environment = await session.get(Environment, deployment.environment_id)
    assert environment is not None
    aliases = await deployments.environment_aliases(session=session, environment_id=environment.id)
    current = next((a for a in aliases if a.type.value == "environment"), None)
    target = deployment
    if current is not None and current.deployment_id == deployment.id:
        if not current.previous_deployment_id:
            raise Conflict("there is no previous deployment to roll back to")
        target = await deployments.get(
            session=session, deployment_id=current.previous_deployment_id
        )
    await _switch_environment(p, session, project, environment, target, "deployment.rolled_back")
    return target


async def promote(
    p: Platform, session: AsyncSession, deployment: Deployment, project: Project
) -> Deployment:
    """Serve this deployment (e.g. a preview) on the production environment. A preview that
    declares volumes ran on scratch copies of them: serving it in production would show none
    of production's data, so it is refused."""
    preview = deployment.environment_id is None or deployment.pr_number is not None
    if preview and volumes.declared(deployment.config):
        raise Conflict(
            "this preview ran on empty scratch copies of the project's volumes, not on "
            "production's data; deploy its commit to production instead (push it to the "
            "production branch, or deploy that branch from the dashboard)"
        )
    production = await session.scalar(
        select(Environment).where(
            Environment.project_id == project.id, Environment.is_production.is_(True)
        )
    )
    assert production is not None
    await _switch_environment(p, session, project, production, deployment, "deployment.promoted")
    return deployment
