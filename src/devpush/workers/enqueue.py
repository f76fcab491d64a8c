"""Typed helpers to enqueue jobs. Job ids are deterministic, so enqueuing twice is harmless."""

from __future__ import annotations

import time

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, default_queue_name, in_progress_key_prefix


async def enqueue_start(redis: ArqRedis, deployment_id: str) -> None:
    await redis.enqueue_job("start_deployment", deployment_id, _job_id=f"start:{deployment_id}")


async def enqueue_finalize(redis: ArqRedis, deployment_id: str) -> None:
    await redis.enqueue_job(
        "finalize_deployment", deployment_id, _job_id=f"finalize:{deployment_id}"
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
