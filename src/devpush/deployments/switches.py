"""Rollbacks and promotes that outlive the process making them. The aliases move and a
pending `AliasSwitch` row is written in one transaction; then Traefik is awaited with no lock
held. Whoever takes the row (deletes it) concludes the switch: its event
(`deployment.rolled_back` / `deployment.promoted`) once the route is served, or the aliases
put back where they were. The request that made the switch takes it as soon as Traefik
answers; should that process die while it waited, the monitor takes rows older than the
wait could last, so the switch's event is written once, never lost."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import new_id, session_scope, utcnow
from devpush.deployments import traefik_wait
from devpush.deployments.finalize import Pointed, restore_aliases
from devpush.deployments.models import AliasSwitch
from devpush.outbox.emit import emit
from devpush.platform import Platform
from devpush.projects.models import Project

log = logging.getLogger("devpush.deployments")
# A switch the monitor takes over: older than the request's wait could last, with room to spare.
ORPHANED_AFTER = timedelta(seconds=traefik_wait.ROUTE_TIMEOUT + 30)


def record(
    session: AsyncSession,
    *,
    project_id: str,
    deployment_id: str,
    kind: str,
    pointed: Pointed,
    data: dict[str, Any],
) -> AliasSwitch:
    """The pending switch, added to the transaction that moves the aliases."""
    switch = AliasSwitch(
        id=new_id(),  # known now: the request takes it back by id
        project_id=project_id,
        deployment_id=deployment_id,
        kind=kind,
        router=pointed.router,
        hostname=pointed.hostname,
        aliases=pointed.values,
        earlier=pointed.earlier,
        data=data,
    )
    session.add(switch)
    return switch


async def take(session: AsyncSession, switch_id: str) -> AliasSwitch | None:
    """The pending switch, now this transaction's to conclude; None when another took it."""
    return await session.scalar(
        delete(AliasSwitch).where(AliasSwitch.id == switch_id).returning(AliasSwitch)
    )


async def conclude(p: Platform, session: AsyncSession, switch: AliasSwitch, served: bool) -> bool:
    """A taken switch's end: its event when Traefik served the route, else its aliases put
    back. Returns whether a previous deployment serves them again (when not served)."""
    project = await session.get(Project, switch.project_id)
    if project is None:  # deleted meanwhile: nothing left to tell or to put back
        return False
    if served:
        await emit(
            session,
            switch.kind,
            team_id=project.team_id,
            project_id=project.id,
            deployment_id=switch.deployment_id,
            data=switch.data,
        )
        return False
    return await restore_aliases(p, session, project.id, switch.deployment_id, pointed(switch))


def pointed(switch: AliasSwitch) -> Pointed:
    return Pointed(
        router=switch.router,
        hostname=switch.hostname,
        values=list(switch.aliases),
        earlier=dict(switch.earlier),
    )


async def reconcile_orphaned(p: Platform) -> int:
    """The monitor's part: switches whose request died while it waited for Traefik are
    concluded, each by one monitor. Returns how many."""
    async with session_scope(p.sessions) as session:
        rows = list(
            await session.scalars(
                select(AliasSwitch).where(AliasSwitch.created_at < utcnow() - ORPHANED_AFTER)
            )
        )
    concluded = 0
    for row in rows:
        served = await traefik_wait.wait_route_live(
            p, row.router, row.hostname, traefik_wait.ROUTE_TIMEOUT
        )
        async with session_scope(p.sessions) as session:
            switch = await take(session, row.id)
            if switch is None:
                continue
            await conclude(p, session, switch, served)
        concluded += 1
        log.warning(
            "concluded a switch whose request stopped while Traefik loaded it",
            extra={"deployment_id": row.deployment_id, "kind": row.kind, "served": served},
        )
    return concluded
