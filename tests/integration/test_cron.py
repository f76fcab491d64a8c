"""Cron jobs through the scheduler, the database and the API (issue #20), with a runtime that
records what it is asked to run: each slot fires once however many schedulers race for it, a
job never overlaps itself (the skip is recorded and logged), runs follow the environment's
alias, their output is searchable and their history listed, a failed run emits `cron.failed`,
bad declarations are refused without changing anything, and another team sees nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from devpush import builds, crypto
from devpush.cron.models import CronRun
from devpush.cron.scheduler import Scheduler
from devpush.db import session_scope
from devpush.deployments.models import Alias, AliasType, Conclusion, Deployment, Status
from devpush.outbox.models import DomainEvent
from devpush.platform import Platform
from devpush.runtime.base import ExecOutput, ExecResult, RuntimeHandle, RuntimeSpec
from tests.factories.auth import Account

NIGHTLY = {"name": "nightly", "schedule": "* * * * *", "command": "echo hi", "timeout": 30}
# The current minute (runs record their real start: how long ago a run started decides
# whether its scheduler is presumed dead).
T0 = datetime.now(UTC).replace(second=10, microsecond=0)
MINUTE = T0.replace(second=0)


@dataclass
class RecordingRuntime:
    """Runs nothing: records each exec, prints its command, and answers `code`; `hold` keeps a
    run going until it is set."""

    name: str = "fake"
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    code: int = 0
    hold: asyncio.Event | None = None

    async def exec(
        self,
        handle: RuntimeHandle,
        spec: RuntimeSpec,
        command: str,
        *,
        timeout: float,
        output: ExecOutput,
    ) -> ExecResult:
        self.calls.append((handle.id, command, dict(spec.env)))
        await output("stdout", f"ran {command} with {spec.env.get('GREETING')}")
        await output("stdout", f"secret is {spec.env.get('API_TOKEN')}")
        if self.hold is not None:
            await self.hold.wait()
        return ExecResult(self.code)

    async def close(self) -> None:
        pass


@pytest.fixture
def fake(platform: Platform) -> RecordingRuntime:
    runtime = RecordingRuntime()
    platform.runtimes._built["fake"] = runtime  # type: ignore[assignment]
    return runtime


async def make_project(client: httpx.AsyncClient, account: Account, **body: Any) -> Any:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": "jobs", "repo_url": "http://127.0.0.1:9/acme/jobs.git", **body},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def go_live(
    platform: Platform, project: Any, jobs: list[dict[str, Any]], *, environment: str = "production"
) -> str:
    """A deployment of `environment` that its alias points at, declaring `jobs`."""
    env = next(e for e in project["environments"] if e["name"] == environment)
    plan = builds.Plan(stack="custom", start="python3 app.py")
    async with session_scope(platform.sessions) as session:
        deployment = Deployment(
            project_id=project["id"],
            environment_id=env["id"],
            branch="main",
            trigger="api",
            status=Status.completed,
            conclusion=Conclusion.succeeded,
            config={"cron": jobs, "plan": plan.to_json()},
            env_enc=crypto.encrypt_json({"GREETING": "bonjour", "API_TOKEN": "tok-123456"}),
            secret_keys=["API_TOKEN"],
            runtime="fake",
            runtime_handle={"backend": "fake", "id": "inst", "deployment_id": "x"},
            created_at=T0 - timedelta(hours=1),
            ready_at=T0 - timedelta(hours=1),
        )
        session.add(deployment)
        await session.flush()
        alias = await session.scalar(
            select(Alias).where(
                Alias.environment_id == env["id"], Alias.type == AliasType.environment
            )
        )
        if alias is None:
            alias = Alias(
                project_id=project["id"],
                type=AliasType.environment,
                value=f"{project['slug']}-{environment}",
                environment_id=env["id"],
            )
            session.add(alias)
        alias.previous_deployment_id, alias.deployment_id = alias.deployment_id, deployment.id
        return deployment.id


async def settle(*schedulers: Scheduler) -> None:
    while tasks := [t for s in schedulers for t in s.running.values()]:
        await asyncio.gather(*tasks)


async def all_runs(platform: Platform) -> list[CronRun]:
    async with session_scope(platform.sessions) as session:
        return list(await session.scalars(select(CronRun).order_by(CronRun.scheduled_at)))


async def test_racing_schedulers_fire_each_slot_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account, fake: RecordingRuntime
) -> None:
    project = await make_project(client, alice)
    hourly = {**NIGHTLY, "name": "hourly", "schedule": f"{T0.minute} * * * *"}
    await go_live(platform, project, [NIGHTLY, hourly])
    schedulers = [Scheduler(platform) for _ in range(4)]
    for now in (T0, T0 + timedelta(seconds=20), T0 + timedelta(seconds=65)):
        await asyncio.gather(*(s.tick(now) for s in schedulers))
        await settle(*schedulers)
    runs = await all_runs(platform)
    fired = sorted((r.job, r.scheduled_at) for r in runs)
    assert fired == [
        ("hourly", MINUTE),
        ("nightly", MINUTE),
        ("nightly", MINUTE + timedelta(minutes=1)),
    ]
    assert len(fake.calls) == 3 and {r.status for r in runs} == {"succeeded"}
    assert fake.calls[0][2]["GREETING"] == "bonjour"  # the env rebuilt from the snapshot


async def test_an_overlapping_slot_is_skipped_and_logged(
    client: httpx.AsyncClient, platform: Platform, alice: Account, fake: RecordingRuntime
) -> None:
    project = await make_project(client, alice)
    deployment_id = await go_live(platform, project, [NIGHTLY])
    fake.hold = asyncio.Event()
    first, second = Scheduler(platform), Scheduler(platform)
    await first.tick(T0)
    for _ in range(100):  # the run has started
        if fake.calls:
            break
        await asyncio.sleep(0.02)
    await second.tick(T0 + timedelta(minutes=1))
    await settle(second)
    fake.hold.set()
    await settle(first)
    running, skipped = await all_runs(platform)
    assert (running.status, skipped.status) == ("succeeded", "skipped")
    assert f"previous run #{running.id[:8]}" in (skipped.error or "")
    assert len(fake.calls) == 1
    found = await client.get(
        f"/api/v1/projects/{project['id']}/logs",
        params={"q": "still running"},
        headers=alice.headers,
    )
    [line] = found.json()["items"]
    assert line["phase"] == "cron" and line["deployment_id"] == deployment_id
    assert line["message"].startswith(f"[nightly #{skipped.id[:8]}] Skipped: the previous run")


async def test_runs_follow_the_alias_and_show_in_the_api_and_logs(
    client: httpx.AsyncClient, platform: Platform, alice: Account, fake: RecordingRuntime
) -> None:
    project = await make_project(
        client, alice, environments=[{"name": "staging", "branch_pattern": "dev"}]
    )
    old = await go_live(platform, project, [NIGHTLY])
    new = await go_live(platform, project, [{**NIGHTLY, "command": "echo new"}])
    staging = await go_live(platform, project, [{**NIGHTLY, "command": "echo staging"}],
                            environment="staging")  # fmt: skip
    fake.code = 3
    scheduler = Scheduler(platform)
    await scheduler.tick(T0)
    await settle(scheduler)
    assert sorted(c[1] for c in fake.calls) == ["echo new", "echo staging"]  # not the old one
    base = f"/api/v1/projects/{project['id']}"
    jobs = (await client.get(f"{base}/cron", headers=alice.headers)).json()
    by_env = {j["environment"]: j for j in jobs}
    assert by_env["production"]["deployment_id"] == new
    assert old not in {j["deployment_id"] for j in jobs}
    assert by_env["staging"]["deployment_id"] == staging
    assert by_env["production"]["last_run"]["exit_code"] == 3
    assert by_env["production"]["last_run"]["status"] == "failed"
    params = {"environment": "production", "job": "nightly"}
    page = (await client.get(f"{base}/cron/runs", params=params, headers=alice.headers)).json()
    [run] = page["items"]
    assert run["status"] == "failed" and run["exit_code"] == 3 and run["duration"] is not None
    assert run["error"] == "exited with code 3" and run["deployment_id"] == new
    logs = await client.get(f"{base}/logs", params={"q": "ran echo new"}, headers=alice.headers)
    [line] = logs.json()["items"]
    assert line["message"] == f"[nightly #{run['id'][:8]}] ran echo new with bonjour"
    masked = await client.get(f"{base}/logs", params={"q": "secret is"}, headers=alice.headers)
    assert all("tok-123456" not in item["message"] for item in masked.json()["items"])
    assert len(masked.json()["items"]) == 2
    async with session_scope(platform.sessions) as session:
        events = list(
            await session.scalars(select(DomainEvent).where(DomainEvent.type == "cron.failed"))
        )
    assert sorted(e.data["environment_id"] for e in events) == sorted(
        e["id"] for e in project["environments"]
    )
    assert {e.data["exit_code"] for e in events} == {3}


async def test_a_run_asked_for_starts_on_the_next_tick(
    client: httpx.AsyncClient, platform: Platform, alice: Account, fake: RecordingRuntime
) -> None:
    project = await make_project(client, alice)
    await go_live(platform, project, [{**NIGHTLY, "schedule": "0 3 1 1 *"}])
    base = f"/api/v1/projects/{project['id']}/cron"
    queued = await client.post(f"{base}/nightly/run", headers=alice.headers)
    assert queued.status_code == 202 and queued.json()["status"] == "queued", queued.text
    unknown = await client.post(f"{base}/weekly/run", headers=alice.headers)
    assert unknown.status_code == 404 and "declares no cron job 'weekly'" in unknown.text
    scheduler = Scheduler(platform)
    await scheduler.tick(T0 + timedelta(days=3))  # no slot due: only the asked-for run
    await settle(scheduler)
    [run] = (await client.get(f"{base}/runs", headers=alice.headers)).json()["items"]
    assert run["id"] == queued.json()["id"] and run["status"] == "succeeded"
    assert len(fake.calls) == 1


async def test_an_interrupted_run_is_expired_so_the_job_runs_again(
    client: httpx.AsyncClient, platform: Platform, alice: Account, fake: RecordingRuntime
) -> None:
    project = await make_project(client, alice)
    await go_live(platform, project, [NIGHTLY])
    gone = Scheduler(platform)  # a monitor that claims a slot, then dies mid-run
    gone._spawn = lambda run_id: None  # type: ignore[method-assign]
    await gone.tick(T0)
    later = Scheduler(platform)
    await later.tick(T0 + timedelta(minutes=1))  # within the timeout: a skip
    await later.tick(T0 + timedelta(minutes=5))  # 30 s timeout + grace passed: expired, runs
    await settle(later)
    statuses = [(r.scheduled_at - MINUTE, r.status) for r in await all_runs(platform)]
    assert statuses == [
        (timedelta(0), "failed"),
        (timedelta(minutes=1), "skipped"),
        (timedelta(minutes=5), "succeeded"),
    ], statuses
    [interrupted] = [r for r in await all_runs(platform) if r.status == "failed"]
    assert "interrupted" in (interrupted.error or "")


async def test_previews_and_environments_without_a_live_deployment_run_nothing(
    client: httpx.AsyncClient, platform: Platform, alice: Account, fake: RecordingRuntime
) -> None:
    project = await make_project(client, alice)
    async with session_scope(platform.sessions) as session:
        session.add(
            Deployment(
                project_id=project["id"], environment_id=None, branch="feature", trigger="api",
                status=Status.completed, conclusion=Conclusion.succeeded,
                config={"cron": [NIGHTLY]}, env_enc=crypto.encrypt_json({}), runtime="fake",
                runtime_handle={"backend": "fake", "id": "p", "deployment_id": "p"},
                created_at=T0 - timedelta(hours=1),
            )
        )  # fmt: skip
    scheduler = Scheduler(platform)
    assert await scheduler.tick(T0) == []
    assert fake.calls == []
    conflict = await client.post(
        f"/api/v1/projects/{project['id']}/cron/nightly/run", headers=alice.headers
    )
    assert conflict.status_code == 409 and "no live deployment" in conflict.text


BAD = [
    ([NIGHTLY, NIGHTLY], "two cron jobs are named 'nightly'"),
    ([{**NIGHTLY, "schedule": "61 * * * *"}], "not a cron expression"),
    ([{**NIGHTLY, "command": ""}], "needs a command"),
    ([{**NIGHTLY, "command": "echo \u0000"}], "NUL"),
    ([{**NIGHTLY, "timeout": 0}], "timeout"),
    ([{**NIGHTLY, "timeout": "soon"}], "timeout"),
]


@pytest.mark.parametrize(("jobs", "words"), BAD)
async def test_bad_jobs_are_refused_and_change_nothing(
    client: httpx.AsyncClient, alice: Account, jobs: Any, words: str
) -> None:
    keep = [{**NIGHTLY, "name": "keep"}]
    project = await make_project(client, alice, cron=keep)
    response = await client.patch(
        f"/api/v1/projects/{project['id']}", json={"cron": jobs}, headers=alice.headers
    )
    assert response.status_code == 422, response.text
    assert words in response.text, response.text
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "other", "cron": jobs},
        headers=alice.headers,
    )
    assert created.status_code == 422, created.text
    shown = await client.get(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert shown.json()["config"]["cron"] == keep


async def test_another_teams_cron_is_not_found(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account,
    fake: RecordingRuntime,
) -> None:  # fmt: skip
    project = await make_project(client, alice)
    await go_live(platform, project, [NIGHTLY])
    base = f"/api/v1/projects/{project['id']}/cron"
    for method, path in (
        ("GET", base),
        ("GET", f"{base}/runs"),
        ("POST", f"{base}/nightly/run"),
        ("POST", f"{base}/nightly/run?environment=production"),
    ):
        response = await client.request(method, path, headers=bob.headers)
        assert response.status_code == 404, (path, response.text)
    assert await all_runs(platform) == []


async def test_stopping_the_loop_stops_its_runs_and_old_runs_are_pruned(
    client: httpx.AsyncClient, platform: Platform, alice: Account, fake: RecordingRuntime
) -> None:
    project = await make_project(client, alice)
    await go_live(platform, project, [NIGHTLY])
    fake.hold = asyncio.Event()  # never set: the run is going when the monitor stops
    stop = asyncio.Event()
    scheduler = Scheduler(platform)
    loop = asyncio.create_task(scheduler.loop(stop, tick=0.05))
    for _ in range(200):
        if fake.calls:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(loop, 10)
    [run] = await all_runs(platform)
    assert run.status == "failed" and run.error == "the scheduler stopped mid-run"
    async with session_scope(platform.sessions) as session:
        row = await session.get(CronRun, run.id)
        assert row is not None
        row.created_at = T0 - timedelta(days=31)
    await scheduler.prune()
    assert await all_runs(platform) == []
