"""Typed helpers to enqueue jobs: the one place jobs are queued (the domains call these; the
workers run the jobs). Job ids are deterministic, so enqueuing twice is harmless."""

from __future__ import annotations

import time
from datetime import datetime

from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    default_queue_name,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from arq.jobs import Job


async def enqueue_start(redis: ArqRedis, deployment_id: str) -> None:
    await redis.enqueue_job("start_deployment", deployment_id, _job_id=f"start:{deployment_id}")


async def enqueue_finalize(redis: ArqRedis, deployment_id: str) -> None:
    await redis.enqueue_job(
        "finalize_deployment", deployment_id, _job_id=f"finalize:{deployment_id}"
    )


async def enqueue_scale(redis: ArqRedis, deployment_id: str) -> None:
    """Each request its own job (a newer count is never dropped as a duplicate); the job
    serializes them per deployment."""
    await redis.enqueue_job(
        "scale_deployment", deployment_id, _job_id=f"scale:{deployment_id}:{time.time_ns()}"
    )


async def enqueue_fail(redis: ArqRedis, deployment_id: str, error: str) -> None:
    await redis.enqueue_job(
        "fail_deployment", deployment_id, error, _job_id=f"fail:{deployment_id}"
    )


async def enqueue_delete_container(redis: ArqRedis, deployment_id: str) -> None:
    await redis.enqueue_job(
        "delete_container", deployment_id, _job_id=f"delete-container:{deployment_id}"
    )


async def enqueue_cleanup(redis: ArqRedis, project_id: str | None) -> None:
    await redis.enqueue_job(
        "cleanup_inactive_containers", project_id, _job_id=f"cleanup:{project_id or 'all'}"
    )


async def enqueue_delete_project(redis: ArqRedis, project_id: str) -> None:
    await redis.enqueue_job("delete_project", project_id, _job_id=f"delete-project:{project_id}")


async def enqueue_delete_team(redis: ArqRedis, team_id: str) -> None:
    await redis.enqueue_job("delete_team", team_id, _job_id=f"delete-team:{team_id}")


async def enqueue_delete_user(redis: ArqRedis, user_id: str) -> None:
    await redis.enqueue_job("delete_user", user_id, _job_id=f"delete-user:{user_id}")


async def enqueue_github_webhook(redis: ArqRedis, delivery_id: str) -> None:
    await redis.enqueue_job("github_webhook", delivery_id, _job_id=f"github-webhook:{delivery_id}")


async def enqueue_github_report(redis: ArqRedis, deployment_id: str, status: str) -> None:
    await redis.enqueue_job(
        "github_report", deployment_id, _job_id=f"github-report:{deployment_id}:{status}"
    )


async def enqueue_retire_branch(redis: ArqRedis, project_id: str, branch: str) -> None:
    """One queued retirement per project and branch (git forbids ":" in a branch name)."""
    await redis.enqueue_job(
        "retire_branch", project_id, branch, _job_id=f"retire-branch:{project_id}:{branch}"
    )


async def enqueue_notification(
    redis: ArqRedis, delivery_id: str, attempt: int, *, defer: float | None = None
) -> None:
    """Attempt `attempt` (0-based) of a notification delivery, after `defer` seconds."""
    await redis.enqueue_job(
        "deliver_notification",
        delivery_id,
        attempt,
        _job_id=f"notify:{delivery_id}:{attempt}",
        _defer_by=defer,
    )


async def enqueue_notification_again(
    redis: ArqRedis, delivery_id: str, attempt: int, *, due: datetime
) -> None:
    """Attempt `attempt` of a delivery whose job was lost, under a job id of its own: the lost
    one may still be marked running by the worker that died holding it, and arq refuses an id
    it holds. The id is the same for every sweep that finds the attempt due at `due`."""
    await redis.enqueue_job(
        "deliver_notification",
        delivery_id,
        attempt,
        _job_id=f"notify:{delivery_id}:{attempt}:{int(due.timestamp() * 1000)}",
    )


async def abort_start(redis: ArqRedis, deployment_id: str) -> None:
    """Abort a queued or running start_deployment job (the worker allows aborts)."""
    await redis.zadd(abort_jobs_ss, {f"start:{deployment_id}": int(time.time() * 1000)})


async def start_job_state(redis: ArqRedis, deployment_id: str) -> str:
    """Where a deployment's start job is: "running", "queued" or "missing"."""
    job_id = f"start:{deployment_id}"
    if await redis.exists(in_progress_key_prefix + job_id):
        return "running"
    if await redis.zscore(default_queue_name, job_id) is not None:
        return "queued"
    return "missing"


async def discard_start_job(redis: ArqRedis, deployment_id: str) -> None:
    """Forget a start job whose worker died after the deployment moved on: arq would keep it
    "in progress", blocking the queue, until its in-progress mark expires (minutes)."""
    job_id = f"start:{deployment_id}"
    await redis.zrem(default_queue_name, job_id)
    await redis.delete(
        job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id
    )


async def in_progress_jobs(redis: ArqRedis) -> list[str]:
    """Ids of the jobs a worker marked as running."""
    return [
        (key.decode() if isinstance(key, bytes) else key).removeprefix(in_progress_key_prefix)
        async for key in redis.scan_iter(match=in_progress_key_prefix + "*", count=500)
    ]


async def job_running_for(redis: ArqRedis, job_id: str, mark_seconds: float) -> float:
    """Seconds since a worker marked the job as running (arq sets the mark to expire after
    `mark_seconds`); -1 when it is not marked."""
    ttl_ms = await redis.pttl(in_progress_key_prefix + job_id)
    return -1.0 if ttl_ms < 0 else mark_seconds - ttl_ms / 1000


async def release_job(redis: ArqRedis, job_id: str) -> None:
    """Remove a dead worker's mark of the job as running, so that a live worker runs it again
    (it is still queued; jobs are idempotent)."""
    await redis.delete(in_progress_key_prefix + job_id)


async def release_stale_job(
    redis: ArqRedis, job_id: str, *, timeouts: dict[str, float], mark_seconds: float
) -> bool:
    """A job marked running for longer than its own timeout cannot be running (arq cancels it
    at the timeout and removes the mark): its worker died. Release it. True when released."""
    running_for = await job_running_for(redis, job_id, mark_seconds)
    if running_for < 0:
        return False
    info = await Job(job_id, redis, _deserializer=redis.job_deserializer).info()
    timeout = timeouts.get(info.function) if info else None
    if timeout is None or running_for <= timeout + 10:
        return False
    await release_job(redis, job_id)
    return True


async def enqueue_build_runner_image(redis: ArqRedis, name: str, *, refresh: bool = False) -> bool:
    """One queued or running build per runner image; False when one already is."""
    job = await redis.enqueue_job(
        "build_runner_image", name, refresh, _job_id=f"runner-image:{name}"
    )
    return job is not None
