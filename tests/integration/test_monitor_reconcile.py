"""The monitor's reconciliation of deployments stuck in `prepare` (real PostgreSQL and Redis):
a dead worker's deployment is concluded, a lost job is enqueued again, a queued one waits."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from arq.constants import default_queue_name, in_progress_key_prefix
from sqlalchemy import update

from devpush.db import session_scope, utcnow
from devpush.deployments.models import Deployment
from devpush.platform import Platform
from devpush.queue import enqueue_finalize, start_job_state
from devpush.runtime.base import RuntimeHandle
from devpush.workers.jobs import finalizing_key, heartbeat_key, job_timeouts
from devpush.workers.reconcile import reconcile, reconcile_orphans
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
    await reconcile(platform)
    result = await status_of(client, alice, deployment_id)
    assert result["conclusion"] == "failed" and "worker" in result["error"]


async def test_a_lost_job_is_enqueued_again_and_a_queued_one_waits(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    deployment_id = await stale_deployment(client, platform, alice)
    assert await start_job_state(platform.redis, deployment_id) == "queued"
    await reconcile(platform)
    assert (await status_of(client, alice, deployment_id))["status"] == "prepare"
    await platform.redis.zrem(default_queue_name, f"start:{deployment_id}")
    await platform.redis.delete(f"arq:job:start:{deployment_id}")
    assert await start_job_state(platform.redis, deployment_id) == "missing"
    await reconcile(platform)
    assert await start_job_state(platform.redis, deployment_id) == "queued"
    assert (await status_of(client, alice, deployment_id))["status"] == "prepare"


async def test_a_deploy_whose_worker_died_before_starting_the_instance_is_concluded(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    """The worker was killed between `deploy` and saving the started instance's upstream:
    the deployment must not stay in `deploy` forever."""
    deployment_id = await stale_deployment(client, platform, alice)
    async with session_scope(platform.sessions) as session:
        await session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(status="deploy", deploy_started_at=utcnow() - timedelta(minutes=1))
        )
    await reconcile(platform)
    result = await status_of(client, alice, deployment_id)
    assert result["conclusion"] == "failed", result
    assert "worker preparing this deployment stopped" in result["error"]


async def test_a_deploy_with_a_live_worker_is_left_alone(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    deployment_id = await stale_deployment(client, platform, alice)
    async with session_scope(platform.sessions) as session:
        await session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(status="deploy", deploy_started_at=utcnow() - timedelta(minutes=1))
        )
    await platform.redis.set(heartbeat_key(deployment_id), "1", px=60_000)
    await reconcile(platform)
    assert (await status_of(client, alice, deployment_id))["status"] == "deploy"


async def test_jobs_a_dead_worker_left_running_are_released(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    """A finalize job marked running for longer than its timeout is released so that a live
    worker runs it; a recent mark is left alone; the start job of a concluded deployment is
    dropped from the queue."""
    timeouts, mark_seconds = job_timeouts(platform.settings)
    stale, fresh = await stale_deployment(client, platform, alice), "0" * 20
    for deployment_id, age in ((stale, timeouts["finalize_deployment"] + 10), (fresh, 1)):
        await enqueue_finalize(platform.redis, deployment_id)
        await platform.redis.set(
            in_progress_key_prefix + f"finalize:{deployment_id}",
            b"1",
            px=int((mark_seconds - age) * 1000),
        )
    # the start job of `stale` was running when its worker died; then it was concluded
    await platform.redis.set(in_progress_key_prefix + f"start:{stale}", b"1", px=600_000)
    async with session_scope(platform.sessions) as session:
        await session.execute(
            update(Deployment)
            .where(Deployment.id == stale)
            .values(status="completed", conclusion="failed", concluded_at=utcnow())
        )
    await reconcile(platform)
    assert not await platform.redis.exists(in_progress_key_prefix + f"finalize:{stale}")
    assert await platform.redis.exists(in_progress_key_prefix + f"finalize:{fresh}")
    assert await start_job_state(platform.redis, stale) == "missing"
    queued = {j.decode() for j in await platform.redis.zrange(default_queue_name, 0, -1)}
    assert queued == {f"finalize:{stale}", f"finalize:{fresh}"}  # still there, to run again


async def test_a_finalize_whose_worker_died_runs_again_without_waiting_out_its_timeout(
    platform: Platform,
) -> None:
    """Finalize starts replicas, so its timeout is minutes; its heartbeat tells a dead worker
    within seconds. A mark half a minute old without a heartbeat is released; one with a live
    heartbeat, or only a moment old, is left to its worker."""
    _, mark_seconds = job_timeouts(platform.settings)
    dead, alive, starting = "d" * 20, "a" * 20, "s" * 20
    for deployment_id, age in ((dead, 30), (alive, 30), (starting, 1)):
        await enqueue_finalize(platform.redis, deployment_id)
        await platform.redis.set(
            in_progress_key_prefix + f"finalize:{deployment_id}",
            b"1",
            px=int((mark_seconds - age) * 1000),
        )
    await platform.redis.set(finalizing_key(alive), "1", px=6000)
    await reconcile(platform)
    assert not await platform.redis.exists(in_progress_key_prefix + f"finalize:{dead}")
    assert await platform.redis.exists(in_progress_key_prefix + f"finalize:{alive}")
    assert await platform.redis.exists(in_progress_key_prefix + f"finalize:{starting}")
    queued = {j.decode() for j in await platform.redis.zrange(default_queue_name, 0, -1)}
    assert f"finalize:{dead}" in queued  # still queued: a live worker runs it again


class ListingRuntime:
    """A runtime with an instance of each given deployment. While the monitor lists them, the
    worker saves the handle of the first one (after the monitor read which deployments are
    live, and after its heartbeat ended)."""

    def __init__(self, platform: Platform, deployment_ids: list[str]) -> None:
        self.platform = platform
        self.handles = [
            RuntimeHandle(backend="fake", id=f"instance-{i}", deployment_id=i)
            for i in deployment_ids
        ]
        self.removed: list[str] = []

    async def list(self) -> list[RuntimeHandle]:
        saved = self.handles[0]
        async with session_scope(self.platform.sessions) as session:
            await session.execute(
                update(Deployment)
                .where(Deployment.id == saved.deployment_id)
                .values(status="deploy", runtime_handle=saved.to_json())
            )
        return self.handles

    async def remove(self, handle: RuntimeHandle) -> None:
        self.removed.append(handle.deployment_id)


async def test_an_instance_whose_handle_is_saved_while_listing_is_kept(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment_id = await stale_deployment(client, platform, alice)
    runtime = ListingRuntime(platform, [deployment_id, "nosuchdeployment"])
    monkeypatch.setattr(platform.runtimes, "available", lambda: ["fake"])
    monkeypatch.setattr(platform.runtimes, "get", lambda name: runtime)
    await reconcile_orphans(platform)
    assert runtime.removed == ["nosuchdeployment"]  # the true orphan goes, the new one stays
