"""The monitor's reconciliation, run at its start and periodically: deployments whose worker
died are concluded or enqueued again, so are rollbacks and promotes whose request died while
Traefik loaded them, jobs a dead worker left running are released, runtime instances with no
live deployment are removed, and certificates are checked."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from devpush.db import session_scope, utcnow
from devpush.deployments import flows, switches
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment, Status
from devpush.domains import certificates
from devpush.errors import DevpushError
from devpush.platform import Platform
from devpush.queue import (
    discard_start_job,
    enqueue_fail,
    enqueue_finalize,
    enqueue_start,
    in_progress_jobs,
    job_running_for,
    release_job,
    release_stale_job,
    start_job_state,
)
from devpush.workers.jobs import HEARTBEAT_TTL_MS, finalizing_key, heartbeat_key, job_timeouts

log = logging.getLogger("devpush.monitor")
STALE_PREPARE_S = 8.0
WORKER_DIED = (
    "The worker preparing this deployment stopped (killed or crashed). Redeploy to try again."
)


async def reconcile(p: Platform) -> None:
    try:
        await reconcile_stale_prepares(p)
        await reconcile_stuck_finalize(p)
        await switches.reconcile_orphaned(p)
        await reconcile_dead_jobs(p)
        await reconcile_orphans(p)
        async with session_scope(p.sessions) as session:
            await certificates.check(session=session, settings=p.settings)
    except (DevpushError, OSError, RedisError, SQLAlchemyError) as exc:
        log.warning("reconcile incomplete", extra={"error": str(exc)})


async def reconcile_stale_prepares(p: Platform) -> None:
    """A deployment still in `prepare` a while after it was created, with no worker
    heart-beating for it: if its job is marked running, that worker died (conclude it);
    if the job is gone, enqueue it again (the job id deduplicates); if it is only queued,
    it waits for a worker. A deployment in `deploy` whose instance was never started
    (no upstream) and whose worker stopped beating is concluded too: nothing else would
    ever move it on."""
    async with session_scope(p.sessions) as session:
        rows = list(
            await session.scalars(
                select(Deployment).where(
                    (Deployment.status == Status.prepare)
                    | ((Deployment.status == Status.deploy) & Deployment.upstream.is_(None))
                )
            )
        )
    for row in rows:
        since = row.deploy_started_at or row.prepare_started_at or row.created_at
        if (utcnow() - since).total_seconds() < STALE_PREPARE_S:
            continue
        if await p.redis.exists(heartbeat_key(row.id)):
            continue
        if row.status == Status.deploy:
            if not _started(row):
                await flows.fail_deployment(p, row.id, WORKER_DIED)
            continue
        state = await start_job_state(p.redis, row.id)
        if state == "queued":
            continue
        if state == "missing" and row.prepare_started_at is None:
            await enqueue_start(p.redis, row.id)
            continue
        await flows.fail_deployment(p, row.id, WORKER_DIED)


def _started(row: Deployment) -> bool:
    """Whether the worker started the deployment's instance: it has an address, or (a
    backend that learns it once the app runs, swarm) its start was recorded."""
    return bool(row.upstream) or "runtime_start" in (row.timings or {})


async def reconcile_stuck_finalize(p: Platform) -> None:
    """finalize/fail states whose job vanished are enqueued again (jobs are idempotent)."""
    async with session_scope(p.sessions) as session:
        rows = list(
            await session.execute(
                select(Deployment.id, Deployment.status, Deployment.error).where(
                    Deployment.status.in_((Status.finalize, Status.fail))
                )
            )
        )
    for deployment_id, status, error in rows:
        if status == Status.finalize:
            await enqueue_finalize(p.redis, deployment_id)
        else:
            await enqueue_fail(p.redis, deployment_id, error or "failed")


async def reconcile_dead_jobs(p: Platform) -> None:
    """Jobs a dead worker left marked as running: a start job whose deployment moved on
    (concluded, or its instance started) with no heartbeat is forgotten; any other job
    marked for longer than its timeout is released, so a live worker runs it again."""
    timeouts, mark_seconds = job_timeouts(p.settings)
    for job_id in await in_progress_jobs(p.redis):
        if job_id.startswith("start:"):
            deployment_id = job_id.removeprefix("start:")
            if await p.redis.exists(heartbeat_key(deployment_id)):
                continue
            row = await deployments.snapshot(p.sessions, deployment_id)
            if row is None or row.status == Status.completed or _started(row):
                await discard_start_job(p.redis, deployment_id)
        elif job_id.startswith("finalize:") and await _finalize_stopped(p, job_id, mark_seconds):
            await release_job(p.redis, job_id)
            log.warning(
                "released a finalize job its dead worker left running", extra={"job": job_id}
            )
        elif await release_stale_job(p.redis, job_id, timeouts=timeouts, mark_seconds=mark_seconds):
            log.warning("released a job its dead worker left running", extra={"job": job_id})


async def _finalize_stopped(p: Platform, job_id: str, mark_seconds: float) -> bool:
    """A finalize job marked running, without its heartbeat, for longer than a worker takes
    to start beating (a few seconds): its worker died."""
    if await p.redis.exists(finalizing_key(job_id.removeprefix("finalize:"))):
        return False
    return await job_running_for(p.redis, job_id, mark_seconds) > 2 * HEARTBEAT_TTL_MS / 1000


async def reconcile_orphans(p: Platform) -> None:
    """Runtime instances with no live deployment are removed."""
    async with session_scope(p.sessions) as session:
        live = set(
            await session.scalars(
                select(Deployment.id).where(Deployment.runtime_handle.is_not(None))
            )
        )
        warm = await deployments.warm_deployment_ids(session=session)
    for name in p.runtimes.available():
        runtime = p.runtimes.get(name)
        try:
            handles = await runtime.list()
        except DevpushError as exc:
            log.warning("cannot list runtime", extra={"runtime": name, "error": str(exc)})
            continue
        for handle in handles:
            if handle.deployment_id in live or handle.deployment_id in warm:
                continue
            if await _in_use(p, handle.deployment_id):
                continue
            log.info("removing orphan instance", extra={"deployment_id": handle.deployment_id})
            await runtime.remove(handle)


async def _in_use(p: Platform, deployment_id: str) -> bool:
    """Asked again just before a removal, since the sets above were read before the
    runtime's list: the worker may have saved the handle since, or not saved it yet (it
    still heart-beats while it prepares)."""
    row = await deployments.snapshot(p.sessions, deployment_id)
    if row is None:
        return False
    if row.runtime_handle is not None:
        return True
    if row.status == Status.completed:
        return False
    return await p.redis.exists(heartbeat_key(deployment_id)) > 0
