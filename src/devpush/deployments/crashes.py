"""A live deployment whose app exited (the monitor noticed): its route is pulled first, so its
hostnames fall to the platform's 503 page and no request goes to an address another instance
may get next; then it is restarted with backoff and routed again once it answers. After
RESTART_MAX_CRASHES exits within RESTART_WINDOW it is marked crashed, with its exit code and
last log lines, and its route stays pulled until a new deployment (or a rollback) replaces it.

Everything is recorded on the deployment's row, so a monitor that dies mid-restart loses
nothing: the next one picks the `restarting` deployment up where it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import session_scope
from devpush.deployments import flows, routing, traefik_wait
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Deployment, InstanceHealth, Status
from devpush.logs.store import LogStore
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.runtime.base import InstanceStatus, RuntimeHandle
from devpush.settings import Settings


@dataclass(frozen=True)
class Crash:
    attempt: int  # exits within the window, this one included
    crashed: bool
    delay: float  # seconds before the next restart


def backoff(settings: Settings, attempt: int) -> float:
    """1 s, 2 s, 4 s, ... (from RESTART_BACKOFF_MIN), at most RESTART_BACKOFF_MAX."""
    delay = settings.restart_backoff_min * 2 ** max(attempt - 1, 0)
    return float(min(delay, settings.restart_backoff_max))


def restart_due(settings: Settings, deployment: Deployment) -> float:
    """When (time.time()) the next restart may run: the last exit plus its backoff."""
    if not deployment.crashes:
        return 0.0
    return float(deployment.crashes[-1]) + backoff(settings, len(deployment.crashes))


def is_live(row: Deployment) -> bool:
    """Served (or being restarted to be served again), as opposed to failed or retiring: a
    retiring deployment's route was taken away on purpose (cleanup), with no health set."""
    if row.status != Status.completed or row.conclusion != Conclusion.succeeded:
        return False
    if not row.runtime_handle:
        return False
    return bool(row.upstream) or row.instance_health == InstanceHealth.restarting


def stopped_with_platform(exited: InstanceStatus) -> bool:
    """The runtime stopped it on purpose (`devpush up` stops the process runtime's apps when
    it stops), not the app: a live deployment's instance is only stopped that way."""
    return exited.error == "stopped"


def exit_reason(exited: InstanceStatus) -> str:
    if exited.exit_code is not None:
        what = f"The app exited with code {exited.exit_code}"
    else:
        what = "The app stopped"
    return f"{what} ({exited.error})" if exited.error else what


async def pull_route(p: Platform, deployment_id: str, exited: InstanceStatus) -> Crash | None:
    """Record the exit and take the deployment's routes away; once this returns, Traefik no
    longer routes to its old upstream (confirmed through its API where there is one). None
    when the deployment is not live any more (nothing to do)."""
    s = p.settings
    now = time.time()
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if not is_live(row):
            return None
        recent = [float(t) for t in row.crashes or [] if now - float(t) < s.restart_window]
        if not stopped_with_platform(exited):  # that is no crash: start it again at once
            recent.append(now)
        crashed = len(recent) >= s.restart_max_crashes
        row.crashes = recent
        if exited.exit_code is not None:  # a start that failed keeps the last code known
            row.exit_code = exited.exit_code
        upstream, row.upstream = row.upstream, None
        row.instance_health = InstanceHealth.crashed if crashed else InstanceHealth.restarting
        if crashed:  # the lines stored so far; `report` adds the exit's own once shipped
            row.crash_log = await last_lines(session, s, deployment_id, p.log_store)
        await routing.sync_project(session=session, settings=s, project_id=row.project_id)
        project = await session.get(Project, row.project_id)
        slug = project.slug if project else ""
    # Committed and written: only now may the runtime release the old port and address.
    # (Its other replicas, if any, go on serving the route.)
    if upstream:
        await traefik_wait.wait_server_gone(p, traefik.router_name(slug, deployment_id), upstream)
    return Crash(attempt=len(recent), crashed=crashed, delay=backoff(s, len(recent)))


async def report(p: Platform, deployment_id: str, crash: Crash, exited: InstanceStatus) -> None:
    """Tell the user (a system line in the runtime log, an event on the streams); a crashed
    deployment keeps its last log lines (the shipper has stored the exit's output by now)."""
    s = p.settings
    reason = exit_reason(exited)
    if stopped_with_platform(exited):
        message = "The app was stopped with the platform; starting it again"
    elif crash.crashed:
        minutes = f"{s.restart_window / 60:g} min"
        message = (
            f"{reason}; it exited {crash.attempt} times within {minutes}, so it is marked "
            "crashed and its URLs answer 503. Redeploy once it is fixed."
        )
    else:
        message = (
            f"{reason}; restarting in {crash.delay:g}s "
            f"(attempt {crash.attempt} of {s.restart_max_crashes - 1})"
        )
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if crash.crashed:
            row.crash_log = await last_lines(session, s, deployment_id, p.log_store)
    await flows.system_log(p, deployment_id, message)


async def last_lines(
    session: AsyncSession, settings: Settings, deployment_id: str, store: LogStore
) -> list[str]:
    if not settings.crash_log_lines:
        return []
    tail = await store.tail(
        session=session,
        deployment_id=deployment_id,
        phases=("runtime",),
        limit=settings.crash_log_lines,
    )
    return [line.message for line in tail]


async def restart(p: Platform, deployment_id: str) -> RuntimeHandle | None:
    """Run the deployment's app again through its runtime. None when it is no longer to be
    restarted; a runtime failure is raised (the caller counts it as an exit)."""
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id)
        if row.instance_health != InstanceHealth.restarting or not is_live(row):
            return None
        project = await session.get(Project, row.project_id)
        assert project is not None and row.runtime_handle is not None
        spec = await flows.restart_spec(p, session, row, project)
        handle = RuntimeHandle.from_json(row.runtime_handle)
    runtime = p.runtimes.get(handle.backend)
    started = await runtime.restart(handle, spec)
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if row.runtime_handle is not None:
            row.runtime_handle = started.to_json()  # upstream stays None until it answers
            return started
    await runtime.remove(started)  # retired meanwhile: the cleanup removed the old one
    return None


async def restore_route(p: Platform, deployment_id: str, handle: RuntimeHandle) -> bool:
    """Route the deployment to its restarted instance again, once it answers."""
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if row.instance_health != InstanceHealth.restarting or not is_live(row):
            return False
        project = await session.get(Project, row.project_id)
        assert project is not None
        row.runtime_handle = handle.to_json()
        row.upstream = handle.upstream
        await routing.sync_project(session=session, settings=p.settings, project_id=project.id)
        router = traefik.router_name(project.slug, row.id)
        own = deployments.alias_specs(project, row, None)[0].value
    # Committed first: no row lock is held while Traefik loads the route. The deployment
    # reads `restarting` until then, so nobody is told it serves before its route does.
    await traefik_wait.wait_route_live(p, router, f"{own}.{p.settings.deploy_domain}")
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if row.instance_health != InstanceHealth.restarting or row.upstream != handle.upstream:
            return False  # exited again meanwhile, or replaced: the monitor has it
        row.instance_health = None
    await flows.system_log(p, deployment_id, "The app was restarted and serves again")
    return True
