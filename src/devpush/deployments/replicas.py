"""Replicas: a deployment's instances beyond replica 0 (the one that ran the build).

Each replica runs a copy of replica 0's built app on a port and address (process runtime) or in
a container (docker) of its own. Traefik balances each deployment's route over all its routed
replicas and health-checks them (proxy/traefik.py), so one that dies drops out of the route
while the others serve. A new deployment goes live only once every replica answers its health
path (finalize.py); `scale` changes a live deployment's count without a redeploy: new replicas
are routed once each answers, extra ones are unrouted first, then drained and removed.

The count: the environment's own (`devpush scale`, the API), else the project's or
devpush.toml's `[start] replicas`, else 1. Previews always run one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import session_scope
from devpush.deployments import routing, traefik_wait
from devpush.deployments import service as deployments
from devpush.deployments.models import AliasType, Deployment
from devpush.deployments.readiness import exit_message, not_answering, probe
from devpush.deployments.shipper import replica_offsets_key
from devpush.errors import DevpushError, Invalid, NotFound, RuntimeFailure
from devpush.platform import Platform
from devpush.projects.limits import MAX_REPLICAS
from devpush.projects.models import Environment, Project
from devpush.proxy import traefik
from devpush.runtime.base import (
    Endpoint,
    InstanceState,
    ReplicatingRuntime,
    Runtime,
    RuntimeHandle,
    RuntimeSpec,
)

ENVIRONMENT_REF = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class ReplicaFailed(DevpushError):
    """A new replica did not become ready; it was removed again."""


@dataclasses.dataclass(frozen=True)
class Replica:
    index: int
    handle: RuntimeHandle
    upstream: str | None  # None: not routed (starting, or retiring)

    def to_json(self) -> dict[str, Any]:
        return {"replica": self.index, "handle": self.handle.to_json(), "upstream": self.upstream}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Replica:
        return cls(
            index=int(value["replica"]),
            handle=RuntimeHandle.from_json(value["handle"]),
            upstream=value.get("upstream"),
        )


def of(row: Deployment) -> list[Replica]:
    return [Replica.from_json(value) for value in row.replicas or []]


def serving(row: Deployment) -> int:
    """How many instances serve the deployment's route now (replica 0 included)."""
    return len(routing.routed_upstreams(row.upstream, row.replicas))


async def wanted(session: AsyncSession, row: Deployment) -> int:
    """How many replicas the deployment should run (replica 0 included)."""
    if row.environment_id is None or row.pr_number is not None:
        return 1
    environment = await session.get(Environment, row.environment_id)
    if environment is not None and environment.replicas:
        return environment.replicas
    return int(row.config.get("replicas") or 1)


async def scale(p: Platform, deployment_id: str, count: int) -> None:
    """Bring the deployment to `count` replicas (replica 0 included). Idempotent: replicas
    recorded without an upstream (a worker died while starting them) are made again."""
    from devpush.deployments.flows import restart_spec

    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id)
        if not row.runtime_handle:
            return
        first = RuntimeHandle.from_json(row.runtime_handle)
        runtime = p.runtimes.get(first.backend)
        if isinstance(runtime, ReplicatingRuntime):
            health = row.config.get("health_path") or "/"
            await _scale_tasks(p, runtime, first, count, health)
            return
        current = {replica.index: replica for replica in of(row)}
        missing = [k for k in range(1, count) if k not in current or not current[k].upstream]
        spec = None
        if missing:
            project = await session.get(Project, row.project_id)
            assert project is not None
            spec = await restart_spec(p, session, row, project)
        health = row.config.get("health_path") or "/"
    runtime = p.runtimes.get(first.backend)
    extra = [replica for k, replica in current.items() if k >= count]
    if extra:
        await _retire(p, deployment_id, runtime, extra)
    if spec is not None:
        started = await asyncio.gather(
            *(
                _add(p, runtime, first, dataclasses.replace(spec, replica=k), health)
                for k in missing
            ),
            return_exceptions=True,
        )
        if errors := [e for e in started if isinstance(e, BaseException)]:
            raise errors[0]


async def _add(
    p: Platform, runtime: Runtime, first: RuntimeHandle, spec: RuntimeSpec, health: str
) -> None:
    """Make, start and route one replica; on any failure it is removed and not recorded."""
    stale = await _record(p, spec.deployment_id, spec.replica, None)
    if stale is not None:  # a half-started one from a job that died: replaced
        with contextlib.suppress(RuntimeFailure):
            await runtime.remove(stale.handle)
    handle: RuntimeHandle | None = None
    try:
        handle = await runtime.replicate(first, spec)
        await p.redis.delete(replica_offsets_key(handle.id))  # its output starts afresh
        await _record(p, spec.deployment_id, spec.replica, Replica(spec.replica, handle, None))
        handle = await runtime.start(handle)
        await _until_ready(p, runtime, handle, health, spec.replica)
    except BaseException:
        if handle is not None:
            with contextlib.suppress(RuntimeFailure):
                await runtime.remove(handle)
        await _record(p, spec.deployment_id, spec.replica, None)
        raise
    routed = Replica(spec.replica, handle, handle.upstream)
    if not await _record(p, spec.deployment_id, spec.replica, routed, route=True):
        await runtime.remove(handle)  # the deployment was retired meanwhile
        await _record(p, spec.deployment_id, spec.replica, None)


async def _record(
    p: Platform, deployment_id: str, index: int, replica: Replica | None, *, route: bool = False
) -> Replica | None:
    """Put `replica` in the row (None: take it out); returns the entry it replaced. With
    `route`, only while the deployment still has its instance (it is not retiring), and the
    route is rewritten: returns None when it was refused."""
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        entries = {r.index: r for r in of(row)}
        if route and not _servable(row):
            return None
        before = entries.pop(index, None)
        if replica is not None:
            entries[index] = replica
        row.replicas = [entries[k].to_json() for k in sorted(entries)]
        if route or (before is not None and before.upstream):
            await routing.sync_project(
                session=session, settings=p.settings, project_id=row.project_id
            )
        return before if not route else replica


def _servable(row: Deployment) -> bool:
    """Deploying, or live: not failed, canceled or retiring (unrouted on purpose)."""
    from devpush.deployments.crashes import is_live

    return bool(row.runtime_handle) and (not deployments.is_concluded(row) or is_live(row))


async def _until_ready(
    p: Platform, runtime: Runtime, handle: RuntimeHandle, health: str, index: int
) -> None:
    s = p.settings
    url = f"http://{handle.upstream}{health}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.deploy_timeout
    last = "no answer"
    interval = s.probe_min_interval
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
        while True:
            status = await runtime.status(handle)
            if status.state in (InstanceState.exited, InstanceState.missing):
                message = exit_message(status.phase, status.exit_code, status.error)
                raise ReplicaFailed(f"Replica {index}: {message}")
            if status.state is InstanceState.running:
                answer = await probe(http, url)
                if answer is None:
                    return
                last = answer
            if loop.time() > deadline:
                message = not_answering(health, s.deploy_timeout, last)
                raise ReplicaFailed(f"Replica {index}: {message}")
            await asyncio.sleep(interval)
            interval = min(interval * 2, s.probe_max_interval)


async def _retire(p: Platform, deployment_id: str, runtime: Runtime, extra: list[Replica]) -> None:
    """Unroute the extra replicas (Traefik's file first, and until Traefik has dropped them),
    let them drain, remove them."""
    for replica in extra:
        await _record(p, deployment_id, replica.index, dataclasses.replace(replica, upstream=None))
    router = await _router(p, deployment_id)
    for replica in extra:
        if router and replica.upstream:
            await traefik_wait.wait_server_gone(p, router, replica.upstream)
    await asyncio.gather(*(runtime.stop(r.handle, timeout=p.settings.drain_seconds) for r in extra))
    for replica in extra:
        await runtime.remove(replica.handle)
        await _record(p, deployment_id, replica.index, None)


# ---- a backend that runs the replicas itself (swarm: a service's tasks) ------------------
async def _scale_tasks(
    p: Platform, runtime: ReplicatingRuntime, first: RuntimeHandle, count: int, health: str
) -> None:
    """Set the task count, wait until that many tasks answer, then route exactly those. On
    the way down the backend chooses which tasks go: each gets SIGTERM and its drain, and
    Traefik's health check and retries send their requests to the others until the route
    names only those left."""
    await runtime.scale(first, count)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + p.settings.deploy_timeout
    interval = p.settings.probe_min_interval
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
        while True:
            found = await runtime.endpoints(first)
            ready = await _answering(http, found, health)
            if len(found) == count and len(ready) == count:
                break
            if loop.time() > deadline:
                raise ReplicaFailed(
                    f"{len(ready)} of {count} tasks answer {health} after "
                    f"{p.settings.deploy_timeout:.0f}s; see the deployment's logs"
                )
            await asyncio.sleep(interval)
            interval = min(interval * 2, p.settings.probe_max_interval)
    await _record_tasks(p, first, ready)


async def _answering(http: httpx.AsyncClient, found: list[Endpoint], health: str) -> list[Endpoint]:
    answers = await asyncio.gather(*(probe(http, f"http://{e.upstream}{health}") for e in found))
    return [e for e, answer in zip(found, answers, strict=True) if answer is None]


async def _record_tasks(p: Platform, first: RuntimeHandle, tasks: list[Endpoint]) -> None:
    """Route exactly `tasks`: the first as the deployment's own upstream, the others as its
    replicas 1.. (each with its task's id), while the deployment is servable."""
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=first.deployment_id, lock=True)
        if not tasks or not _servable(row):
            return
        entries = [
            Replica(
                k,
                dataclasses.replace(first, data={**first.data, "replica": k, "task": e.task}),
                e.upstream,
            )
            for k, e in enumerate(tasks[1:], start=1)
        ]
        upstream = tasks[0].upstream
        if row.upstream == upstream and of(row) == entries:
            return
        row.upstream = upstream
        row.runtime_handle = dataclasses.replace(first, upstream=upstream).to_json()
        row.replicas = [entry.to_json() for entry in entries]
        await routing.sync_project(session=session, settings=p.settings, project_id=row.project_id)


async def follow_tasks(p: Platform, row: Deployment, runtime: ReplicatingRuntime) -> None:
    """A live deployment's route follows its tasks: one that exited leaves it, its
    replacement (swarm's restart policy, or a task moved to another node) joins once it
    answers. The count itself is the backend's to keep."""
    if not row.runtime_handle:
        return
    first = RuntimeHandle.from_json(row.runtime_handle)
    routed = set(routing.routed_upstreams(row.upstream, row.replicas))
    found = await runtime.endpoints(first)
    known = [e for e in found if e.upstream in routed]
    new = [e for e in found if e.upstream not in routed]
    if new:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            new = await _answering(http, new, row.config.get("health_path") or "/")
    tasks = sorted(known + new, key=lambda e: (e.slot, e.task))
    if not tasks or {e.upstream for e in tasks} == routed:
        return  # none answers (yet): the route keeps its servers, Traefik's checks skip them
    await _record_tasks(p, first, tasks)
    from devpush.deployments.flows import system_log

    for upstream in sorted(routed - {e.upstream for e in found}):
        await system_log(
            p, row.id, f"The task at {upstream} stopped; the swarm starts a new one in its place"
        )
    for task in new:
        await system_log(p, row.id, f"Task {task.slot} serves at {task.upstream}")


# ---- scaling a live environment --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scaled:
    environment: Environment
    deployment_id: str | None  # the live deployment to scale now (None: nothing live yet)


async def set_count(
    *, session: AsyncSession, project: Project, environment: str, count: int
) -> Scaled:
    """Record an environment's replica count (by its slug or id); its next deployments run
    that many, and its live one is scaled by the caller's job (`converge`)."""
    if not 1 <= count <= MAX_REPLICAS:
        raise Invalid(f"replicas must be between 1 and {MAX_REPLICAS}")
    row = None
    if ENVIRONMENT_REF.fullmatch(environment):  # a slug or an id; anything else names none
        row = await session.scalar(
            select(Environment).where(
                Environment.project_id == project.id,
                (Environment.slug == environment) | (Environment.id == environment),
            )
        )
    if row is None:
        raise NotFound(f"project {project.name} has no environment {environment[:63]!r}")
    row.replicas = count
    live = None
    for alias in await deployments.environment_aliases(session=session, environment_id=row.id):
        if alias.type == AliasType.environment and alias.deployment_id:
            live = alias.deployment_id
    await session.flush()
    return Scaled(environment=row, deployment_id=live)


async def converge(p: Platform, deployment_id: str) -> int:
    """Scale a live deployment to its environment's count, read again after each change (a
    newer count given meanwhile is applied too). Returns the count it runs."""
    from devpush.deployments.crashes import is_live
    from devpush.deployments.flows import system_log

    while True:
        async with session_scope(p.sessions) as session:
            row = await deployments.get(session=session, deployment_id=deployment_id)
            if not is_live(row):
                return 0
            count = await wanted(session, row)
            routed = {r.index for r in of(row) if r.upstream}
        if routed == set(range(1, count)) and len(of(row)) == count - 1:
            return count
        await system_log(p, deployment_id, f"Scaling to {count} replicas")
        await scale(p, deployment_id, count)


async def pull(p: Platform, deployment_id: str, replica: Replica, reason: str) -> None:
    """A replica whose app exited: out of the route (Traefik's file first, and until Traefik
    has dropped it), said in the log; `converge` then replaces it."""
    from devpush.deployments.flows import system_log

    await _record(p, deployment_id, replica.index, dataclasses.replace(replica, upstream=None))
    router = await _router(p, deployment_id)
    if router and replica.upstream:
        await traefik_wait.wait_server_gone(p, router, replica.upstream)
    await system_log(
        p, deployment_id, f"Replica {replica.index}: {reason}; starting a new one in its place"
    )


async def _router(p: Platform, deployment_id: str) -> str | None:
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id)
        project = await session.get(Project, row.project_id)
    return traefik.router_name(project.slug, deployment_id) if project else None
