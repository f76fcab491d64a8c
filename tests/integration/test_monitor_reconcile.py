"""The monitor's reconciliation of deployments stuck in `prepare` (real PostgreSQL and Redis):
a dead worker's deployment is concluded, a lost job is enqueued again, a queued one waits."""

from __future__ import annotations

from datetime import timedelta

import httpx
from arq.constants import default_queue_name, in_progress_key_prefix
from sqlalchemy import update

from devpush.db import session_scope, utcnow
from devpush.deployments.models import Deployment
from devpush.platform import Platform
from devpush.workers.enqueue import start_job_state
from devpush.workers.monitor import Monitor
from tests.factories.auth import Account


async def stale_deployment(client: httpx.AsyncClient, platform: Platform, account: Account) -> str:
    project = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": "stuck", "start_command": "x"},
        headers=account.headers,
    )
    deployment = await client.post(
        f"/api/v1/projects/{project.json()['id']}/deployments", json={}, headers=account.headers
    )
    deployment_id = str(deployment.json()["id"])
    async with session_scope(platform.sessions) as session:
        await session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(created_at=utcnow() - timedelta(minutes=1))
        )
    return deployment_id


async def status_of(client: httpx.AsyncClient, account: Account, deployment_id: str) -> dict:
    response = await client.get(f"/api/v1/deployments/{deployment_id}", headers=account.headers)
    return dict(response.json())


async def test_a_dead_workers_deployment_is_concluded(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    deployment_id = await stale_deployment(client, platform, alice)
    # the job was picked up (in progress) by a worker that died: no heartbeat
    await platform.redis.set(in_progress_key_prefix + f"start:{deployment_id}", b"1", px=600_000)
    assert await start_job_state(platform.redis, deployment_id) == "running"
    await Monitor(platform).reconcile()
    result = await status_of(client, alice, deployment_id)
    assert result["conclusion"] == "failed" and "worker" in result["error"]


async def test_a_lost_job_is_enqueued_again_and_a_queued_one_waits(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    deployment_id = await stale_deployment(client, platform, alice)
    assert await start_job_state(platform.redis, deployment_id) == "queued"
    await Monitor(platform).reconcile()
    assert (await status_of(client, alice, deployment_id))["status"] == "prepare"
    await platform.redis.zrem(default_queue_name, f"start:{deployment_id}")
    await platform.redis.delete(f"arq:job:start:{deployment_id}")
    assert await start_job_state(platform.redis, deployment_id) == "missing"
    await Monitor(platform).reconcile()
    assert await start_job_state(platform.redis, deployment_id) == "queued"
    assert (await status_of(client, alice, deployment_id))["status"] == "prepare"
