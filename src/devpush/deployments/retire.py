"""Retire runtime instances: unroute, let them drain, ship their last lines, remove them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from sqlalchemy import select, update

from devpush.db import session_scope
from devpush.deployments import replicas, routing, traefik_wait
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment, Status
from devpush.deployments.shipper import Shipper
from devpush.errors import DevpushError
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.runtime.base import InstanceState, Runtime, RuntimeHandle

log = logging.getLogger("devpush.flows")


async def remove_instance(p: Platform, deployment_id: str, *, unless_warm: bool = False) -> bool:
    """Stop routing to a deployment's instance, let it shut down gracefully, then remove it and
    forget its handle (idempotent). See `_retire`."""
    retiring = await _unroute(p, deployment_id, unless_warm=unless_warm)
    if retiring is None:
        return False
    await _retire(p, retiring)
    return True


@dataclasses.dataclass(frozen=True)
class _Retiring:
    """An unrouted instance on its way out, and the Traefik router that served it."""

    deployment_id: str
    handle: RuntimeHandle  # replica 0
    router: str | None
    replicas: tuple[RuntimeHandle, ...] = ()  # the others


async def _unroute(
    p: Platform, deployment_id: str, *, unless_warm: bool = False
) -> _Retiring | None:
    """Take the deployment's routes away, keeping its instance (and handle) for now. Without an
    upstream it can no longer be served again (rollback refuses it): it is retiring."""
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if not deployment.runtime_handle:
            return None
        if unless_warm and deployment.id in await deployments.warm_deployment_ids(
            session=session, project_id=deployment.project_id
        ):
            return None
        # Its own `-id-` hostname stops routing first: a request sent to an instance while it
        # is removed would hang until the proxy gives up on the vanished address.
        deployment.upstream = None
        others = replicas.of(deployment)
        deployment.replicas = [dataclasses.replace(r, upstream=None).to_json() for r in others]
        await routing.sync_project(
            session=session, settings=p.settings, project_id=deployment.project_id
        )
        project = await session.get(Project, deployment.project_id)
        return _Retiring(
            deployment_id=deployment.id,
            handle=RuntimeHandle.from_json(deployment.runtime_handle),
            router=traefik.router_name(project.slug, deployment.id) if project else None,
            replicas=tuple(r.handle for r in others),
        )


async def _retire(p: Platform, retiring: _Retiring) -> None:
    """The one way an unrouted instance goes (cleanup, cancel, failure, deletion): once
    Traefik no longer routes to it (bounded; without Traefik's API there is nothing to wait
    for), SIGTERM lets the app finish the requests already sent to it, SIGKILL follows only
    after `drain_seconds` (an app that exits sooner costs no more), the lines it wrote while
    shutting down are shipped, and then the instance is removed."""
    runtime = p.runtimes.get(retiring.handle.backend)
    if retiring.router:
        await traefik_wait.wait_route_gone(p, retiring.router)
    # A build (a deployment canceled or failed before its app ran) has no requests to finish.
    serving = (await runtime.status(retiring.handle)).state is InstanceState.running
    drain = p.settings.drain_seconds if serving else 0
    await asyncio.gather(
        *(runtime.stop(h, timeout=drain) for h in (retiring.handle, *retiring.replicas))
    )
    await _ship_last_lines(p, retiring.deployment_id, runtime, retiring.handle)
    for handle in (*retiring.replicas, retiring.handle):
        await runtime.remove(handle)
    async with session_scope(p.sessions) as session:  # the row may be gone (project deleted)
        await session.execute(
            update(Deployment)
            .where(Deployment.id == retiring.deployment_id)
            .values(runtime_handle=None, replicas=[])
        )


LAST_LINES_TIMEOUT = 10.0  # seconds to ship a stopped instance's last lines before removal


async def _ship_last_lines(
    p: Platform, deployment_id: str, runtime: Runtime, handle: RuntimeHandle
) -> None:
    """Ship what the stopped app wrote (its shutdown lines) before its output goes with it: the
    monitor's shipper stops following a concluded deployment (canceled, failed), and may not
    have read a retiring one's last lines yet. The store's offsets keep lines single when both
    ship them."""
    async with session_scope(p.sessions) as session:
        deployment = await session.get(Deployment, deployment_id)
    if deployment is None:  # deleted with its project: nobody reads its logs
        return
    shipper = Shipper(p, deployment, runtime, handle)
    try:
        await asyncio.wait_for(shipper.run(follow=False), LAST_LINES_TIMEOUT)
    except (TimeoutError, DevpushError) as exc:
        log.warning(
            "the stopped instance's last log lines were not shipped",
            extra={"deployment_id": deployment_id, "error": str(exc)[:200] or repr(exc)},
        )


async def cleanup_inactive(p: Platform, project_id: str | None = None) -> list[str]:
    """Retire the instances of concluded deployments that no alias points at (now or just
    before): unroute them, then let each one shut down gracefully and remove it (`_retire`),
    all at once. Deployments retired meanwhile (their own cleanup was refused as a duplicate
    of this running job) are taken in the next round."""
    removed: list[str] = []
    while True:
        async with session_scope(p.sessions) as session:
            stmt = select(Deployment.id).where(
                Deployment.runtime_handle.is_not(None), Deployment.status == Status.completed
            )
            if project_id:
                stmt = stmt.where(Deployment.project_id == project_id)
            candidates = list(await session.scalars(stmt))
            warm = await deployments.warm_deployment_ids(session=session, project_id=project_id)
        retiring = []
        for deployment_id in candidates:
            if deployment_id not in warm and (
                unrouted := await _unroute(p, deployment_id, unless_warm=True)
            ):
                retiring.append(unrouted)
        if not retiring:
            return removed
        # Each drains for up to `drain_seconds`: side by side, not one after another.
        results = await asyncio.gather(
            *(_retire(p, each) for each in retiring), return_exceptions=True
        )
        removed += [
            r.deployment_id for r, result in zip(retiring, results, strict=True) if result is None
        ]
        if errors := [result for result in results if isinstance(result, BaseException)]:
            raise errors[0]  # the others are removed; this one is retried with the job
