"""Finalize a deployment: point its aliases, wait until Traefik serves it, then conclude."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import events
from devpush.db import session_scope, utcnow
from devpush.deployments import replicas, routing, traefik_wait
from devpush.deployments import service as deployments
from devpush.deployments.flows import elapsed, fail_deployment, system_log
from devpush.deployments.models import Alias, Conclusion, Status
from devpush.deployments.replicas import ReplicaFailed
from devpush.errors import RuntimeFailure
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.proxy import traefik

log = logging.getLogger("devpush.flows")


@dataclasses.dataclass(frozen=True)
class Pointed:
    """What finalize's first transaction switched: the aliases (and what each one's
    `previous` was before, to put back if the route never goes live) and the route to await."""

    router: str
    hostname: str
    values: list[str]
    earlier: dict[str, str | None]


async def finalize_deployment(p: Platform, deployment_id: str) -> None:
    """Switch the aliases and rewrite Traefik's file (committed: no lock is held while
    Traefik loads it), wait for the route, then conclude: succeeded once served, failed with
    the aliases back on the previous deployment when Traefik never loads it."""
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.status not in (Status.deploy, Status.finalize) or not deployment.upstream:
            return
        deployment.status = Status.finalize
        deployment.ready_at = deployment.ready_at or utcnow()
        count = await replicas.wanted(session, deployment)
    started = utcnow()
    if count > 1 and not await _start_replicas(p, deployment_id, count):
        return
    pointed = await _point_deployment(p, deployment_id)
    if pointed is None:
        return
    # Succeeded means served: Traefik must have loaded the route before the conclusion.
    live = await traefik_wait.wait_route_live(
        p, pointed.router, pointed.hostname, traefik_wait.ROUTE_TIMEOUT
    )
    if live:
        await _conclude_live(p, deployment_id, pointed, started)
    else:
        await _withdraw(p, deployment_id, pointed)


async def _start_replicas(p: Platform, deployment_id: str, count: int) -> bool:
    """Replicas 1.. from replica 0's build, each ready before any alias moves (the switch
    stays atomic: the aliases move to all of them at once). False: the deployment failed."""
    await system_log(p, deployment_id, f"Starting {count - 1} more replicas ({count} in all)")
    try:
        await replicas.scale(p, deployment_id, count)
    except (ReplicaFailed, RuntimeFailure) as exc:
        await fail_deployment(p, deployment_id, str(exc))
        return False
    except Exception as exc:  # a fault of ours: the deployment fails, it never hangs in finalize
        log.exception("starting replicas failed", extra={"deployment_id": deployment_id})
        await fail_deployment(p, deployment_id, f"Starting the replicas failed: {exc!r}")
        return False
    return True


async def _point_deployment(p: Platform, deployment_id: str) -> Pointed | None:
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.status != Status.finalize:
            return None
        project = await session.get(Project, deployment.project_id)
        assert project is not None
        environment = (
            await session.get(Environment, deployment.environment_id)
            if deployment.environment_id
            else None
        )
        specs = deployments.alias_specs(project, deployment, environment)
        earlier = await earlier_previous(session, specs, deployment.id)
        await deployments.point_aliases(
            session=session, project_id=project.id, specs=specs, deployment_id=deployment.id
        )
        await routing.sync_project(session=session, settings=p.settings, project_id=project.id)
        return Pointed(
            router=traefik.router_name(project.slug, deployment.id),
            hostname=f"{specs[-1].value}.{p.settings.deploy_domain}",
            values=[s.value for s in specs],
            earlier=earlier,
        )


async def _conclude_live(
    p: Platform, deployment_id: str, pointed: Pointed, started: datetime
) -> None:
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.status != Status.finalize:  # concluded meanwhile (canceled, run twice)
            if deployment.conclusion != Conclusion.succeeded:
                await restore_aliases(p, session, deployment.project_id, deployment_id, pointed)
            return
        deployments.conclude(deployment, Conclusion.succeeded)
        deployment.timings = {
            **deployment.timings,
            "route": elapsed(started),
            "total": elapsed(deployment.created_at),
        }
    await events.publish_project(
        p.redis,
        deployment.project_id,
        "alias",
        {"deployment_id": deployment.id, "aliases": pointed.values},
    )
    urls = ", ".join(p.settings.deploy_url(value) for value in pointed.values)
    await system_log(p, deployment.id, "Deployment is live: " + urls)
    from devpush.queue import enqueue_cleanup

    await enqueue_cleanup(p.redis, deployment.project_id)


async def _withdraw(p: Platform, deployment_id: str, pointed: Pointed) -> None:
    """Traefik never loaded the route: the aliases serve their previous deployment again
    (rewritten file included), then the deployment fails like any other."""
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.conclusion == Conclusion.succeeded:  # a twin job saw it live
            return
        kept = await restore_aliases(p, session, deployment.project_id, deployment_id, pointed)
        if deployment.status != Status.finalize:  # failed or canceled meanwhile
            return
        reason = not_loaded(pointed, kept)
        deployment.status, deployment.error = Status.fail, reason
    await system_log(p, deployment_id, reason)
    await fail_deployment(p, deployment_id, reason)  # removes the instance, concludes failed


def not_loaded(pointed: Pointed, kept: bool) -> str:
    after = "the previous deployment keeps serving" if kept else "its URLs were withdrawn"
    return (
        f"Traefik did not load the route for {pointed.hostname} within "
        f"{traefik_wait.ROUTE_TIMEOUT:g}s; {after}"
    )


async def earlier_previous(
    session: AsyncSession, specs: list[deployments.AliasSpec], deployment_id: str
) -> dict[str, str | None]:
    """The `previous` of each alias about to switch to `deployment_id` (locked, so it can't
    move before point_aliases): what to put back should the switch be undone."""
    rows = await session.scalars(
        select(Alias).where(Alias.value.in_([s.value for s in specs])).with_for_update()
    )
    return {a.value: a.previous_deployment_id for a in rows if a.deployment_id != deployment_id}


async def restore_aliases(
    p: Platform, session: AsyncSession, project_id: str, deployment_id: str, pointed: Pointed
) -> bool:
    """Undo a switch: each of `pointed`'s aliases still on `deployment_id` serves its previous
    deployment again (one created by the switch goes), and Traefik's file follows. True when
    a previous deployment serves again."""
    aliases = await session.scalars(
        select(Alias)
        .where(Alias.value.in_(pointed.values), Alias.deployment_id == deployment_id)
        .with_for_update()
    )
    kept = False
    for alias in aliases:
        if alias.previous_deployment_id is None:
            await session.delete(alias)
            continue
        kept = True
        alias.deployment_id = alias.previous_deployment_id
        alias.previous_deployment_id = pointed.earlier.get(alias.value)
    await session.flush()
    await routing.sync_project(session=session, settings=p.settings, project_id=project_id)
    return kept
