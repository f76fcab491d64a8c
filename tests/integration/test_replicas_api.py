"""Replicas through the API and in Traefik's file (issue #21): the project and environment
counts, `POST .../environments/{env}/scale` and its bad input (nothing changes), the scale job
it queues for the live deployment, and the load-balanced, health-checked route of a deployment
with several replicas. The replicas themselves run in tests/e2e/test_replicas.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml
from arq.constants import default_queue_name
from sqlalchemy import select

from devpush.db import session_scope
from devpush.deployments import routing
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Status
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.proxy import traefik
from devpush.runtime.base import RuntimeHandle
from tests.factories.auth import Account
from tests.integration.test_projects_deployments_api import create_project


async def environment(platform: Platform, project_id: str, slug: str) -> Environment:
    async with session_scope(platform.sessions) as session:
        row = await session.scalar(
            select(Environment).where(
                Environment.project_id == project_id, Environment.slug == slug
            )
        )
        assert row is not None
        return row


async def live_deployment(platform: Platform, project_id: str, extra: list[str]) -> str:
    """A succeeded production deployment with replica 0 and `extra` replicas routed."""
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        row, _ = await deployments.create(
            session=session,
            settings=platform.settings,
            project=project,
            branch="main",
            trigger="api",
        )
        row.status, row.conclusion = Status.completed, Conclusion.succeeded
        row.runtime_handle = RuntimeHandle("process", row.id, row.id).to_json()
        row.upstream = "10.213.0.2:20000"
        row.replicas = [
            {
                "replica": k,
                "handle": RuntimeHandle("process", f"{row.id}-r{k}", row.id).to_json(),
                "upstream": upstream,
            }
            for k, upstream in enumerate(extra, start=1)
        ]
        environment = await session.get(Environment, row.environment_id)
        specs = deployments.alias_specs(project, row, environment)
        await deployments.point_aliases(
            session=session, project_id=project.id, specs=specs, deployment_id=row.id
        )
        return row.id


async def queued_scales(platform: Platform) -> list[str]:
    jobs = await platform.redis.zrange(default_queue_name, 0, -1)
    return [j.decode() for j in jobs if j.decode().startswith("scale:")]


async def test_the_project_count_is_kept_and_shown(
    client: httpx.AsyncClient, alice: Account
) -> None:
    project = await create_project(
        client,
        alice,
        name="api",
        replicas=3,
        environments=[{"name": "staging", "branch_pattern": "develop", "replicas": 2}],
    )
    assert project["config"]["replicas"] == 3
    staging = next(e for e in project["environments"] if e["name"] == "staging")
    assert staging["replicas"] == 2


async def test_scale_records_the_count_and_queues_the_live_deployment(
    client: httpx.AsyncClient, alice: Account, platform: Platform
) -> None:
    project = await create_project(client, alice, name="web")
    live = await live_deployment(platform, project["id"], ["10.213.0.3:20001"])
    response = await client.post(
        f"/api/v1/projects/{project['id']}/environments/production/scale",
        json={"replicas": 4},
        headers=alice.headers,
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"environment": "production", "replicas": 4, "deployment_id": live}
    assert (await environment(platform, project["id"], "production")).replicas == 4
    assert [job.split(":")[1] for job in await queued_scales(platform)] == [live]
    shown = await client.get(f"/api/v1/deployments/{live}", headers=alice.headers)
    assert shown.json()["replicas"] == 2  # what serves now; the job brings it to 4


async def test_scale_without_a_live_deployment_applies_to_the_next(
    client: httpx.AsyncClient, alice: Account, platform: Platform
) -> None:
    project = await create_project(client, alice, name="quiet")
    response = await client.post(
        f"/api/v1/projects/{project['id']}/environments/production/scale",
        json={"replicas": 2},
        headers=alice.headers,
    )
    assert response.status_code == 202, response.text
    assert response.json()["deployment_id"] is None
    assert await queued_scales(platform) == []
    async with session_scope(platform.sessions) as session:
        row = await session.get(Project, project["id"])
        assert row is not None
        created, _ = await deployments.create(
            session=session, settings=platform.settings, project=row, branch="main", trigger="api"
        )
        from devpush.deployments import replicas

        assert await replicas.wanted(session, created) == 2


@pytest.mark.parametrize(
    ("environment_ref", "body", "status", "words"),
    [
        ("production", {"replicas": 0}, 422, "greater than or equal to 1"),
        ("production", {"replicas": 11}, 422, "less than or equal to 10"),
        ("production", {"replicas": "three"}, 422, "valid integer"),
        ("production", {}, 422, "Field required"),
        ("production", {"replicas": 2, "workers": 4}, 422, "Extra inputs"),
        ("staging", {"replicas": 2}, 404, "no environment 'staging'"),
        ("'; drop table environments; --", {"replicas": 2}, 404, "no environment"),
        ("x" * 300, {"replicas": 2}, 404, "no environment"),
        ("prod%00uction", {"replicas": 2}, 422, "NUL bytes are not allowed"),
    ],
)
async def test_bad_scale_requests_change_nothing(
    client: httpx.AsyncClient,
    alice: Account,
    platform: Platform,
    environment_ref: str,
    body: dict[str, Any],
    status: int,
    words: str,
) -> None:
    project = await create_project(client, alice, name="steady")
    response = await client.post(
        f"/api/v1/projects/{project['id']}/environments/{environment_ref}/scale",
        json=body,
        headers=alice.headers,
    )
    assert response.status_code == status, response.text
    assert words in response.text
    assert (await environment(platform, project["id"], "production")).replicas is None
    assert await queued_scales(platform) == []


async def test_another_teams_project_is_not_found(
    client: httpx.AsyncClient, alice: Account, bob: Account, platform: Platform
) -> None:
    project = await create_project(client, alice, name="private")
    response = await client.post(
        f"/api/v1/projects/{project['id']}/environments/production/scale",
        json={"replicas": 3},
        headers=bob.headers,
    )
    assert response.status_code == 404
    assert (await environment(platform, project["id"], "production")).replicas is None


async def test_the_route_balances_over_routed_replicas_with_health_checks(
    client: httpx.AsyncClient, alice: Account, platform: Platform
) -> None:
    project = await create_project(client, alice, name="balanced", health_path="/healthz")
    live = await live_deployment(platform, project["id"], ["10.213.0.3:20001", "10.213.0.4:20002"])
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=live, lock=True)
        row.replicas = [row.replicas[0], {**row.replicas[1], "upstream": None}]  # restarting
        await routing.sync_project(
            session=session, settings=platform.settings, project_id=project["id"]
        )
        slug = (await session.get(Project, project["id"])).slug  # type: ignore[union-attr]
    written = yaml.safe_load(
        (platform.settings.traefik_dynamic_dir / f"project-{slug}.yml").read_text()
    )
    http = written["http"]
    service = http["services"][traefik.router_name(slug, live)]["loadBalancer"]
    assert [s["url"] for s in service["servers"]] == [
        "http://10.213.0.2:20000",
        "http://10.213.0.3:20001",
    ]
    assert service["healthCheck"]["path"] == "/healthz"
    router = http["routers"][traefik.router_name(slug, live)]
    assert router["middlewares"] == [traefik.RETRY]
    assert http["middlewares"][traefik.RETRY]["retry"]["attempts"] >= 2
    # A dead replica's dial fails fast, so the retry reaches another before the client gives up.
    assert service["serversTransport"] == traefik.TRANSPORT
    transport = http["serversTransports"][traefik.TRANSPORT]
    assert transport["forwardingTimeouts"]["dialTimeout"] == traefik.DIAL_TIMEOUT

    # Replica 0 pulled (its app exited): the others go on serving the hostnames.
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=live, lock=True)
        row.upstream = None
        await routing.sync_project(
            session=session, settings=platform.settings, project_id=project["id"]
        )
    written = yaml.safe_load(
        (platform.settings.traefik_dynamic_dir / f"project-{slug}.yml").read_text()
    )
    service = written["http"]["services"][traefik.router_name(slug, live)]["loadBalancer"]
    assert [s["url"] for s in service["servers"]] == ["http://10.213.0.3:20001"]
    assert "healthCheck" not in service  # one server: nothing to balance over
