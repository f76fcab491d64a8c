"""Metrics through the real parts: the sampler stores CPU, memory, restarts and requests of a
live instance on the real process runtime (PostgreSQL, Redis; Traefik's exposition served by
a stand-in), several samplers store a slot once, week-old samples roll up into 5-minute rows,
the API refuses bad input and other teams, and /metrics answers only its token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from devpush.db import session_scope
from devpush.deployments.models import Conclusion, Deployment, Status
from devpush.metrics import service
from devpush.metrics.models import MetricSample
from devpush.metrics.sampler import Sampler
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy.traefik import router_name
from devpush.runtime.process_files import Instance
from devpush.runtime.process_stats import cgroup_stats
from tests.factories.auth import Account
from tests.integration.crashing import (
    APP,
    instance_dir,
    live_deployment,
    remove_instances,
    row_of,
)

TOKEN = "metrics-test-token"


@pytest.fixture
async def source(tmp_path: Path, platform: Platform) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "app.py").write_text(APP)
    yield directory  # type: ignore[misc]
    await remove_instances(platform)


def traefik_text(router: str, ok: int, errors: int) -> str:
    """Traefik's exposition for one router: `ok` 200s under 10 ms, `errors` 500s of 0.2 s."""
    labels = f'method="GET",protocol="http",router="{router}@file",service="{router}@file"'
    lines = [
        "# TYPE traefik_router_requests_total counter",
        f'traefik_router_requests_total{{code="200",{labels}}} {ok}',
        f'traefik_router_requests_total{{code="500",{labels}}} {errors}',
        "# TYPE traefik_router_request_duration_seconds histogram",
    ]
    for le, count in (("0.01", ok), ("0.1", ok), ("0.25", ok + errors), ("+Inf", ok + errors)):
        lines.append(
            f'traefik_router_request_duration_seconds_bucket{{code="200",{labels},le="{le}"}} '
            f"{count}"
        )
    lines.append(f'traefik_router_request_duration_seconds_count{{code="200",{labels}}} {ok}')
    lines.append(f'traefik_router_request_duration_seconds_sum{{code="200",{labels}}} 0.1')
    return "\n".join(lines) + "\n"


def stand_in(pages: list[str]) -> httpx.AsyncClient:
    """Answers each scrape with the next page of Traefik's exposition text."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        return httpx.Response(200, text=pages.pop(0))

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def samples(platform: Platform, deployment_id: str) -> list[MetricSample]:
    async with session_scope(platform.sessions) as session:
        rows = await session.execute(
            select(MetricSample)
            .where(MetricSample.deployment_id == deployment_id)
            .order_by(MetricSample.ts)
        )
        return list(rows.scalars())


async def test_the_sampler_stores_a_live_process_instance(
    client: httpx.AsyncClient, platform: Platform, alice: Account, source: Path
) -> None:
    deployment_id = await live_deployment(client, platform, alice, source, "metered")
    row = await row_of(platform, deployment_id)
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, row.project_id)
        assert project is not None
        router = router_name(project.slug, deployment_id)
    pages = [traefik_text(router, 10, 0), traefik_text(router, 40, 5)]
    sampler = Sampler(platform, http=stand_in(pages))
    start = datetime.now(UTC).replace(microsecond=0)
    assert await sampler.sample(start) == 1
    # A crash recorded within the next interval (the monitor's list on the row).
    async with session_scope(platform.sessions) as session:
        found = await session.get(type(row), deployment_id)
        assert found is not None
        found.crashes = [start.timestamp() + 5]
    assert await sampler.sample(start + timedelta(seconds=10)) == 1
    first, second = await samples(platform, deployment_id)
    assert first.memory_bytes and first.memory_bytes > 1_000_000  # a Python process
    instance = Instance.load(instance_dir(row))
    assert instance is not None
    if instance.cgroups:  # this machine lets the runtime make cgroups: both are read there
        cpu, memory = cgroup_stats(instance.cgroups)
        assert cpu is not None and memory is not None and memory > 1_000_000
    assert first.cpu_seconds is not None and first.cpu_percent is None  # no previous sample
    assert second.cpu_percent is not None and second.cpu_percent >= 0
    assert (first.requests, first.p50_ms) == (0, None)  # the first scrape is the baseline
    assert (second.requests, second.status_2xx, second.status_5xx) == (35, 30, 5)
    assert second.p50_ms is not None and second.p50_ms <= 10
    assert second.p99_ms is not None and 100 < second.p99_ms <= 250
    assert (first.restarts, second.restarts) == (0, 1)
    await sampler.http.aclose()


async def test_several_samplers_store_a_slot_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account, source: Path
) -> None:
    deployment_id = await live_deployment(client, platform, alice, source, "twice")
    one, two = Sampler(platform), Sampler(platform)
    slot = 123_456_789
    assert await one.claim(slot) and not await two.claim(slot)
    ts = datetime.now(UTC).replace(microsecond=0)
    assert await one.sample(ts) == 1
    assert await two.sample(ts) == 0  # the row is there: the primary key keeps it single
    assert len(await samples(platform, deployment_id)) == 1
    await one.http.aclose()
    await two.http.aclose()


async def metered_deployment(client: httpx.AsyncClient, account: Account, name: str) -> str:
    project = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": name, "start_command": "python3 app.py"},
        headers=account.headers,
    )
    assert project.status_code == 201, project.text
    created = await client.post(
        f"/api/v1/projects/{project.json()['id']}/deployments", json={}, headers=account.headers
    )
    assert created.status_code in (200, 201, 202), created.text
    return str(created.json()["id"])


def sample_row(deployment_id: str, project_id: str, ts: datetime, **values: object) -> dict:
    base = {
        "deployment_id": deployment_id,
        "project_id": project_id,
        "resolution": 10,
        "ts": ts,
        "cpu_percent": 10.0,
        "memory_bytes": 100,
        "restarts": 0,
        "requests": 0,
        "status_2xx": 0,
        "status_3xx": 0,
        "status_4xx": 0,
        "status_5xx": 0,
    }
    return base | values


async def test_week_old_samples_roll_up_into_five_minute_rows(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    deployment_id = await metered_deployment(client, alice, "rolled")
    row = await row_of(platform, deployment_id)
    now = datetime(2026, 12, 7, 6, 2, 30, tzinfo=UTC)
    old = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)  # 8 days back, on a 5-minute boundary
    rows = [
        sample_row(
            deployment_id,
            row.project_id,
            old + timedelta(seconds=10 * i),
            cpu_percent=float(i % 2) * 20,  # 0 and 20: averages 10
            memory_bytes=100 + 100 * (i % 2),  # 100 and 200: averages 150
            requests=2,
            status_2xx=2,
            p50_ms=10.0 if i < 15 else 30.0,
            restarts=1 if i == 3 else 0,
        )
        for i in range(60)  # ten minutes: two 5-minute rows
    ]
    recent = now - timedelta(days=1)
    rows.append(sample_row(deployment_id, row.project_id, recent))
    rows.append(
        sample_row(deployment_id, row.project_id, now - timedelta(days=100)) | {"resolution": 300}
    )
    async with session_scope(platform.sessions) as session:
        assert await service.store(session=session, rows=rows) == 62
    async with session_scope(platform.sessions) as session:
        assert await service.downsample(session=session, now=now) == (2, 1)
    async with session_scope(platform.sessions) as session:
        assert await service.downsample(session=session, now=now) == (0, 0)  # idempotent
    kept = await samples(platform, deployment_id)
    assert [(r.resolution, r.ts) for r in kept] == [
        (300, old),
        (300, old + timedelta(minutes=5)),
        (10, recent),
    ]
    first, second = kept[0], kept[1]
    assert first.cpu_percent == pytest.approx(10.0) and first.memory_bytes == 150
    assert (first.requests, first.status_2xx, first.restarts) == (60, 60, 1)
    assert first.p50_ms == pytest.approx(20.0)  # 15 rows at 10 ms, 15 at 30 ms, equal weight
    assert second.p50_ms == pytest.approx(30.0) and second.restarts == 0


async def test_the_api_reads_steps_and_refuses_bad_input_and_other_teams(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account
) -> None:
    deployment_id = await metered_deployment(client, alice, "charted")
    row = await row_of(platform, deployment_id)
    now = datetime.now(UTC)
    base = now - timedelta(minutes=30)
    base = base - timedelta(seconds=base.timestamp() % 60)
    rows = [
        sample_row(deployment_id, row.project_id, base + timedelta(seconds=10 * i), requests=1)
        for i in range(12)
    ]
    async with session_scope(platform.sessions) as session:
        await service.store(session=session, rows=rows)
    url = f"/api/v1/deployments/{deployment_id}/metrics"
    answer = await client.get(url, params={"since": "1h", "step": "1m"}, headers=alice.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["step"] == 60 and body["interval"] == 10
    assert [p["requests"] for p in body["points"]] == [6, 6]
    assert body["points"][0]["cpu_percent"] == 10.0
    default = await client.get(url, headers=alice.headers)
    assert default.status_code == 200 and default.json()["step"] == 10
    assert len(default.json()["points"]) == 12
    for params, says in (
        ({"since": "last week"}, "neither an ISO 8601 time"),
        ({"step": "1s"}, "shorter than the sampling interval"),
        ({"step": "often"}, "not a duration"),
        ({"since": "80d", "step": "10s"}, "more than 2000 points"),
    ):
        bad = await client.get(url, params=params, headers=alice.headers)
        assert bad.status_code == 422, (params, bad.text)
        assert says in bad.text
    other = await client.get(url, headers=bob.headers)
    assert other.status_code == 404
    missing = await client.get("/api/v1/deployments/nosuch/metrics", headers=alice.headers)
    assert missing.status_code == 404


async def test_platform_metrics_answer_only_their_token(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    await metered_deployment(client, alice, "counted")
    done = await metered_deployment(client, alice, "timed")
    async with session_scope(platform.sessions) as session:
        row = await session.get(Deployment, done)
        assert row is not None
        row.status, row.conclusion = Status.completed, Conclusion.succeeded
        row.timings, row.concluded_at = {"total": 12.5}, datetime.now(UTC)
    off = await client.get("/metrics")
    assert off.status_code == 404 and "DEVPUSH_METRICS_TOKEN" in off.text
    platform.settings = platform.settings.model_copy(update={"metrics_token": TOKEN})
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = await client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    ok = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200, ok.text
    assert ok.headers["content-type"].startswith("text/plain")
    text = ok.text
    assert "devpush_jobs_queued " in text
    assert 'devpush_deployments{conclusion="",status="prepare"} 1.0' in text
    assert 'devpush_deployments{conclusion="succeeded",status="completed"} 1.0' in text
    assert 'devpush_deploy_duration_seconds_bucket{le="10.0"} 0.0' in text
    assert 'devpush_deploy_duration_seconds_bucket{le="20.0"} 1.0' in text
    assert "devpush_deploy_duration_seconds_sum 12.5" in text
    assert 'devpush_subscriber_lag_events{subscriber="' in text


async def test_a_deployments_use_is_the_sum_of_its_replicas(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas' CPU and memory add up; one that can't tell (None) counts as nothing, and a
    deployment none of whose instances can tell has no figures."""
    from devpush.metrics.sampler import Live
    from devpush.runtime.base import InstanceStats, RuntimeHandle

    figures = {
        "r0": InstanceStats(cpu_seconds=1.5, memory_bytes=100),
        "r1": InstanceStats(cpu_seconds=2.0, memory_bytes=200),
        "r2": None,
    }

    class Stub:
        async def stats(self, handle: RuntimeHandle) -> InstanceStats | None:
            return figures[handle.id]

    monkeypatch.setattr(platform.runtimes, "get", lambda name: Stub())
    handle = {k: RuntimeHandle("process", k, "d") for k in figures}
    live = Live("d", "p", "router", handle["r0"], (), (handle["r1"], handle["r2"]))
    sampler = Sampler(platform)
    assert await sampler.stats(live) == InstanceStats(cpu_seconds=3.5, memory_bytes=300)
    figures["r0"] = figures["r1"] = None
    assert await sampler.stats(live) is None
    await sampler.http.aclose()
