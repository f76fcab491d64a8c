"""The arq worker: deployment and cleanup jobs. Jobs take ids, are idempotent, have timeouts,
and can be aborted (cancel). `worker_settings()` builds the WorkerSettings at run time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from arq import Retry, cron, func
from arq.constants import default_queue_name, health_check_key_suffix
from arq.worker import Function, Worker
from redis.exceptions import LockError, RedisError

from devpush import runner_builds
from devpush.accounts import teardown as user_teardown
from devpush.bootstrap import build_platform
from devpush.deployments import finalize, flows, replicas, retire
from devpush.deployments import teardown as project_teardown
from devpush.github import jobs as github_jobs
from devpush.logsetup import configure_logging
from devpush.metrics import sampler as metrics
from devpush.notifications import jobs as notification_jobs
from devpush.outbox import dispatch as outbox
from devpush.platform import JOB_SERIALIZERS, Platform, arq_redis_settings
from devpush.settings import Settings, get_settings
from devpush.sources import jobs as source_jobs
from devpush.subscribers import delivering_events
from devpush.teams import teardown as team_teardown

HEARTBEAT_TTL_MS = 6000
log = logging.getLogger("devpush.worker")


EVENTS_KEPT_DAYS = 7


def platform_of(ctx: dict[str, Any]) -> Platform:
    platform: Platform = ctx["platform"]
    return platform


def heartbeat_key(deployment_id: str) -> str:
    return f"devpush:preparing:{deployment_id}"


def finalizing_key(deployment_id: str) -> str:
    return f"devpush:finalizing:{deployment_id}"


@contextlib.asynccontextmanager
async def heartbeat(p: Platform, key: str) -> AsyncIterator[None]:
    """While a worker prepares or finalizes a deployment, it keeps a short-lived key alive;
    the monitor concludes (prepare) or runs again (finalize) the deployments whose key is gone
    (the worker died)."""

    async def beat() -> None:
        while True:
            try:
                await p.redis.set(key, "1", px=HEARTBEAT_TTL_MS)
            except (RedisError, OSError) as exc:  # Redis restarting: beat again shortly
                log.warning("cannot renew the heartbeat", extra={"error": str(exc)[:200]})
            await asyncio.sleep(HEARTBEAT_TTL_MS / 3000)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(RedisError, OSError):  # the key expires on its own
            await p.redis.delete(key)


async def start_deployment(ctx: dict[str, Any], deployment_id: str) -> None:
    p = platform_of(ctx)
    async with heartbeat(p, heartbeat_key(deployment_id)):
        await flows.start_deployment(p, deployment_id)


async def finalize_deployment(ctx: dict[str, Any], deployment_id: str) -> None:
    p = platform_of(ctx)
    # Starting replicas can take minutes: a dead worker's finalize is run again as soon as
    # its heartbeat stops, not once arq's mark of it as running runs out.
    async with heartbeat(p, finalizing_key(deployment_id)):
        await finalize.finalize_deployment(p, deployment_id)


async def fail_deployment(ctx: dict[str, Any], deployment_id: str, error: str) -> None:
    await flows.fail_deployment(platform_of(ctx), deployment_id, error)


async def scale_deployment(ctx: dict[str, Any], deployment_id: str) -> None:
    """Scale a live deployment to its environment's count: one job at a time per deployment
    (a second waits its turn), and each applies the newest count."""
    p = platform_of(ctx)
    lock = p.redis.lock(f"devpush:scale:{deployment_id}", timeout=p.settings.deploy_timeout + 180)
    if not await lock.acquire(blocking=False):
        raise Retry(defer=2)
    try:
        await replicas.converge(p, deployment_id)
    finally:
        with contextlib.suppress(LockError, RedisError, OSError):
            await lock.release()


async def delete_container(ctx: dict[str, Any], deployment_id: str) -> None:
    await retire.remove_instance(platform_of(ctx), deployment_id, unless_warm=True)


async def cleanup_inactive_containers(ctx: dict[str, Any], project_id: str | None = None) -> None:
    await retire.cleanup_inactive(platform_of(ctx), project_id)


async def cleanup_all(ctx: dict[str, Any]) -> None:
    p = platform_of(ctx)
    await retire.cleanup_inactive(p, None)
    # Events every subscriber has passed, once they are a week old.
    await outbox.prune(p.sessions, timedelta(days=EVENTS_KEPT_DAYS))
    await metrics.downsample(p)  # samples: a week at full resolution, then 5-minute rows


async def log_retention(ctx: dict[str, Any]) -> None:
    """Hourly: drop expired daily log partitions, delete shorter per-project retention, and
    make the next days' partitions ahead of time (at worker start too)."""
    from devpush.logs import retention

    p = platform_of(ctx)
    await retention.run(p.engine, default_days=p.settings.log_retention_days)


async def delete_project(ctx: dict[str, Any], project_id: str) -> None:
    await project_teardown.delete_project(platform_of(ctx), project_id)


async def delete_team(ctx: dict[str, Any], team_id: str) -> None:
    await team_teardown.delete_team(
        platform_of(ctx), team_id, delete_projects=project_teardown.delete_team_projects
    )


async def delete_user(ctx: dict[str, Any], user_id: str) -> None:
    await user_teardown.delete_user(platform_of(ctx), user_id)


def functions(settings: Settings) -> list[Function]:
    timeout = settings.job_timeout
    return [
        func(start_deployment, timeout=settings.build_timeout + 120, keep_result=0, max_tries=3),
        # Replicas are started (each until it answers) before the aliases move.
        func(
            finalize_deployment,
            timeout=settings.deploy_timeout + 120,
            keep_result=0,
            max_tries=5,
        ),
        func(fail_deployment, timeout=120, keep_result=0, max_tries=5),
        func(
            scale_deployment,
            timeout=settings.deploy_timeout + 180,
            keep_result=0,
            max_tries=200,  # waiting for another scale of the same deployment counts as a try
        ),
        func(delete_container, timeout=120, keep_result=0, max_tries=5),
        func(cleanup_inactive_containers, timeout=timeout, keep_result=0, max_tries=3),
        func(delete_project, timeout=timeout, keep_result=0, max_tries=5),
        func(delete_team, timeout=timeout, keep_result=0, max_tries=5),
        func(delete_user, timeout=timeout, keep_result=0, max_tries=5),
        *github_jobs.functions(settings),
        *source_jobs.functions(settings),
        *runner_builds.functions(settings),
        *notification_jobs.functions(settings),
    ]


class ResilientWorker(Worker):
    """arq's worker, except that losing Redis (a restart, a network blip) does not end it: it
    logs, waits and polls again, and the jobs it is running go on."""

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            log.warning("redis unavailable, polling again shortly", extra={"error": str(exc)[:200]})
            await asyncio.sleep(1)


def job_timeouts(settings: Settings) -> tuple[dict[str, float], float]:
    """Each job function's timeout, and how long arq marks a job as running (the longest
    timeout plus 10 s, as arq computes it)."""
    timeouts = {f.name: float(f.timeout_s or settings.job_timeout) for f in functions(settings)}
    return timeouts, max([*timeouts.values(), settings.job_timeout]) + 10


def health_check_key(settings: Settings) -> str:
    """Where this worker writes its health (`devpush worker --check` reads it): one key per
    compose colour, so that a dead green is not hidden by a live blue during an update."""
    suffix = f":{settings.worker_colour}" if settings.worker_colour else ""
    return f"{default_queue_name}{health_check_key_suffix}{suffix}"


def worker_settings(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()

    async def on_startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings)
        ctx["platform"] = await build_platform(settings)
        ctx["events"] = delivering_events(ctx["platform"])
        await ctx["events"].__aenter__()

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if "events" in ctx:
            await ctx["events"].__aexit__(None, None, None)
        if "platform" in ctx:
            await platform_of(ctx).close()

    return {
        "functions": functions(settings),
        "cron_jobs": [
            cron(
                cleanup_all,
                minute=set(range(0, 60, 10)),
                run_at_startup=False,
                unique=True,
                timeout=settings.job_timeout,
            ),
            cron(
                log_retention,
                minute=17,
                run_at_startup=True,
                unique=True,
                timeout=settings.job_timeout,
            ),
            cron(
                notification_jobs.sweep_notifications,
                minute=set(range(0, 60, 5)),
                run_at_startup=False,
                unique=True,
                timeout=60,
            ),
        ],
        "redis_settings": arq_redis_settings(settings),
        **JOB_SERIALIZERS,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "poll_delay": 0.02,
        "allow_abort_jobs": True,
        "max_jobs": 10,
        "job_timeout": settings.job_timeout,
        "keep_result": 0,
        "health_check_interval": 5,
        "health_check_key": health_check_key(settings),
        "handle_signals": True,
    }
