"""A live app that exits is noticed within seconds (real process runtime, PostgreSQL, Redis, the
monitor, Traefik's files): its route is pulled first, it is restarted with backoff on a fresh
upstream and routed again once it answers; after repeated exits it reads `crashed` (exit code,
last log lines, an event, a 503 page) and stays unrouted. A monitor stopped mid-restart loses
nothing, and a restart that fails to start counts as an exit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from devpush.db import session_scope
from devpush.deployments.models import Deployment, InstanceHealth
from devpush.errors import RuntimeFailure
from devpush.events import project_stream
from devpush.logs.store import PostgresLogStore
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.runtime.base import RuntimeHandle, RuntimeSpec
from devpush.settings import Settings
from tests.factories.auth import Account
from tests.integration.crashing import (
    APP,
    fast_restarts,
    get_body,
    live_deployment,
    make_exit,
    remove_instances,
    routed_upstreams,
    row_of,
    running_monitor,
    until,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_restarts(settings)  # type: ignore[no-any-return]


@pytest.fixture
async def source(tmp_path: Path, platform: Platform) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "app.py").write_text(APP)
    yield directory  # type: ignore[misc]
    await remove_instances(platform)


async def slug_of(platform: Platform, row: Deployment) -> str:
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, row.project_id)
        assert project is not None
        return project.slug


async def runtime_log(platform: Platform, deployment_id: str) -> list[str]:
    async with session_scope(platform.sessions) as session:
        lines = await PostgresLogStore().tail(
            session=session,
            deployment_id=deployment_id,
            phases=("system", "runtime"),
            limit=500,
        )
    return [line.message for line in lines]


async def test_an_exited_app_is_unrouted_then_restarted_on_a_fresh_upstream(
    client: httpx.AsyncClient, platform: Platform, alice: Account, source: Path
) -> None:
    deployment_id = await live_deployment(client, platform, alice, source, "phoenix")
    row = await row_of(platform, deployment_id)
    slug = await slug_of(platform, row)
    old = row.upstream
    assert old and routed_upstreams(platform, slug) == [old]

    async with running_monitor(platform):
        make_exit(row, 3)

        async def unrouted() -> bool:
            return old not in routed_upstreams(platform, slug)

        took = await until(unrouted, what="the route pulled")
        assert took < 5.0, f"the exit was noticed after {took:.1f}s"

        async def serving_again() -> bool:
            fresh = await row_of(platform, deployment_id)
            return fresh.instance_health is None and fresh.upstream is not None

        await until(serving_again, what="served again")
    row = await row_of(platform, deployment_id)
    assert row.upstream and row.exit_code == 3 and len(row.crashes) == 1
    assert routed_upstreams(platform, slug) == [row.upstream]
    assert await get_body(row.upstream) == f"tenant {slug}"
    log = await runtime_log(platform, deployment_id)
    assert any("exited with code 3; restarting in 0.2s (attempt 1 of 2)" in m for m in log), log
    assert "The app was restarted and serves again" in log
    api = await client.get(f"/api/v1/deployments/{deployment_id}", headers=alice.headers)
    assert api.json()["conclusion"] == "succeeded" and api.json()["instance_health"] is None


async def test_a_crash_loop_ends_crashed_with_its_exit_code_and_last_lines(
    delivering: None, client: httpx.AsyncClient, platform: Platform, alice: Account, source: Path
) -> None:
    deployment_id = await live_deployment(client, platform, alice, source, "icarus")
    row = await row_of(platform, deployment_id)
    slug = await slug_of(platform, row)
    async with running_monitor(platform):
        make_exit(row, 4, sticky=True)  # every restart exits at once

        async def crashed() -> bool:  # marked, then reported (crash_log, the system line)
            if (await row_of(platform, deployment_id)).instance_health != "crashed":
                return False
            return any("marked crashed" in m for m in await runtime_log(platform, deployment_id))

        await until(crashed, what="crashed and reported")
    api = await client.get(f"/api/v1/deployments/{deployment_id}", headers=alice.headers)
    shown = api.json()
    assert shown["instance_health"] == "crashed" and shown["exit_code"] == 4
    assert shown["crash_log"] and "exiting with 4" in shown["crash_log"][-1]
    assert routed_upstreams(platform, slug) == []  # stays pulled
    listed = await client.get(
        f"/api/v1/projects/{row.project_id}/deployments",
        params={"status": "crashed"},
        headers=alice.headers,
    )
    assert [d["id"] for d in listed.json()["items"]] == [deployment_id]
    entries = await platform.redis.xrange(project_stream(row.project_id), min="-")
    payloads = [
        json.loads(fields[b"data"])
        for _, fields in entries
        if fields[b"type"] == b"deployment.status"
    ]
    assert any(
        p["id"] == deployment_id and p["instance_health"] == "crashed" and p["exit_code"] == 4
        for p in payloads
    )
    log = await runtime_log(platform, deployment_id)
    assert any("exited 3 times within 10 min, so it is marked crashed" in m for m in log), log
    # its hostnames answer the platform's 503 page
    page = await client.get("/", headers={"Host": f"{slug}.{platform.settings.deploy_domain}"})
    assert page.status_code == 503 and "App crashed" in page.text
    # serving it again is refused with the reason; a new deployment clears it
    promoted = await client.post(
        f"/api/v1/deployments/{deployment_id}/promote", headers=alice.headers
    )
    assert promoted.status_code == 409 and "crashed" in promoted.text
    # the instance keeps its address claimed in instance.json until it is removed
    assert row.runtime_handle is not None
    instance = json.loads((Path(row.runtime_handle["data"]["dir"]) / "instance.json").read_text())
    assert instance["port"] and instance["pid"]


async def test_a_monitor_stopped_mid_restart_loses_nothing(
    client: httpx.AsyncClient, platform: Platform, alice: Account, source: Path
) -> None:
    # long enough to stop the monitor meanwhile
    platform.settings.restart_backoff_min = platform.settings.restart_backoff_max = 3.0
    deployment_id = await live_deployment(client, platform, alice, source, "lazarus")
    row = await row_of(platform, deployment_id)
    async with running_monitor(platform):
        make_exit(row, 5)

        async def restarting() -> bool:
            fresh = await row_of(platform, deployment_id)
            return fresh.instance_health == InstanceHealth.restarting

        await until(restarting, what="restarting")
    # the first monitor is gone; a second one picks the restart up
    assert (await row_of(platform, deployment_id)).instance_health == "restarting"
    async with running_monitor(platform):

        async def serving_again() -> bool:
            fresh = await row_of(platform, deployment_id)
            return fresh.instance_health is None and fresh.upstream is not None

        await until(serving_again, what="served again by the next monitor")
    row = await row_of(platform, deployment_id)
    assert row.upstream and await get_body(row.upstream) == f"tenant {await slug_of(platform, row)}"
    assert len(row.crashes) == 1


async def test_a_restart_that_fails_to_start_counts_as_an_exit(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment_id = await live_deployment(client, platform, alice, source, "sisyphus")
    row = await row_of(platform, deployment_id)
    runtime = platform.runtimes.get("process")
    attempts: list[str] = []

    async def failing(handle: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        attempts.append(handle.id)
        raise RuntimeFailure("no port left (test)")

    monkeypatch.setattr(runtime, "restart", failing)
    async with running_monitor(platform):
        make_exit(row, 6)

        async def crashed() -> bool:  # marked, then reported (crash_log, the system line)
            if (await row_of(platform, deployment_id)).instance_health != "crashed":
                return False
            return any("marked crashed" in m for m in await runtime_log(platform, deployment_id))

        await until(crashed, what="crashed and reported")
    row = await row_of(platform, deployment_id)
    assert len(attempts) == 2 and len(row.crashes) == 3 and row.exit_code == 6
    log = await runtime_log(platform, deployment_id)
    assert any("it did not start: no port left (test)" in m for m in log), log


async def test_apps_stopped_with_the_platform_start_again_and_count_no_crash(
    client: httpx.AsyncClient, platform: Platform, alice: Account, source: Path
) -> None:
    """`devpush up` stops the process runtime's apps when it stops; started again, the monitor
    brings each live one back without counting a crash (three restarts of the platform within
    the window must not mark an app crashed)."""
    deployment_id = await live_deployment(client, platform, alice, source, "sleeper")
    for attempt in range(1, 4):  # restart_max_crashes is 3 here
        row = await row_of(platform, deployment_id)
        assert row.runtime_handle is not None
        handle = RuntimeHandle.from_json(row.runtime_handle)
        await platform.runtimes.get(handle.backend).stop(handle, timeout=2)
        async with running_monitor(platform):

            async def serving_again(attempt: int = attempt) -> bool:
                fresh = await row_of(platform, deployment_id)
                log = await runtime_log(platform, deployment_id)
                restarted = log.count("The app was restarted and serves again") == attempt
                return restarted and fresh.instance_health is None

            await until(serving_again, what="served again")
    row = await row_of(platform, deployment_id)
    assert row.crashes == [] and row.instance_health is None
    assert await get_body(row.upstream or "") == f"tenant {await slug_of(platform, row)}"
    log = await runtime_log(platform, deployment_id)
    assert log.count("The app was stopped with the platform; starting it again") == 3, log
