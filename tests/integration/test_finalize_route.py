"""Finalize and environment switches confirm the route with Traefik's API, with no row lock held
while they wait: a route Traefik never loads fails the deployment (or the switch) and leaves the
previous deployment serving (real PostgreSQL and Traefik files; Traefik's API is a loopback
double that answers from the rendered files, as Traefik does once it has loaded them)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select, update

from devpush.db import session_scope, utcnow
from devpush.deployments import actions, finalize, switches, traefik_wait
from devpush.deployments import service as deployments
from devpush.deployments.models import Alias, AliasSwitch, Conclusion, Deployment, Status
from devpush.outbox.models import DomainEvent
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.runtime.base import RuntimeHandle
from devpush.settings import Settings
from devpush.signing import traefik_api_auth
from devpush.workers.reconcile import reconcile
from tests.factories.auth import Account


def basic_auth(settings: Settings) -> str:
    user, password = traefik_api_auth(settings)
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class FakeTraefikApi:
    """GET /api/http/routers/<name>@file: the router as rendered in the project files (200), or
    404. `loads=False` is a Traefik that never loads the files; `delay` slows every answer."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.loads = True
        self.delay = 0.0
        self.asked = asyncio.Event()
        self.url = ""

    async def router(self, request: web.Request) -> web.Response:
        assert self.settings is not None
        self.asked.set()
        await asyncio.sleep(self.delay)
        if request.headers.get("Authorization") != basic_auth(self.settings):
            return web.json_response({"message": "unauthorized"}, status=401)
        name = request.match_info["name"].removesuffix("@file")
        if self.loads:
            for config in traefik.read_dynamic(self.settings).values():
                found = (config.get("http") or {}).get("routers", {}).get(name)
                if found:
                    return web.json_response({"name": name, "rule": found["rule"]})
        return web.json_response({"message": "router not found"}, status=404)


@pytest.fixture
async def traefik_api() -> AsyncIterator[FakeTraefikApi]:
    fake = FakeTraefikApi()
    app = web.Application()
    app.router.add_get("/api/http/routers/{name}", fake.router)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def settings(settings: Settings, traefik_api: FakeTraefikApi) -> Settings:
    ours = settings.model_copy(update={"traefik_api_url": traefik_api.url})
    traefik_api.settings = ours
    return ours


@pytest.fixture(autouse=True)
def short_route_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traefik_wait, "ROUTE_TIMEOUT", 1.0)


async def new_project(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": "web", "start_command": "python3 app.py"},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def ready_deployment(
    client: httpx.AsyncClient,
    platform: Platform,
    account: Account,
    project_id: str,
    port: int,
    *,
    handle: bool = False,
) -> str:
    """A production deployment whose app answers (as the monitor leaves it for finalize)."""
    response = await client.post(
        f"/api/v1/projects/{project_id}/deployments", json={}, headers=account.headers
    )
    deployment_id = str(response.json()["id"])
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id)
        row.status, row.upstream = Status.deploy, f"127.0.0.1:{port}"
        if handle:  # rollback serves only a deployment that still has its instance
            row.runtime_handle = RuntimeHandle(
                backend="fake", id=deployment_id, deployment_id=deployment_id
            ).to_json()
    return deployment_id


async def two_live_deployments(
    client: httpx.AsyncClient, platform: Platform, account: Account
) -> tuple[str, str, str]:
    """A project with two finalized deployments, the second serving: (project, first, second)."""
    project_id = await new_project(client, account)
    first = await ready_deployment(client, platform, account, project_id, 9001, handle=True)
    await finalize.finalize_deployment(platform, first)
    second = await ready_deployment(client, platform, account, project_id, 9002, handle=True)
    await finalize.finalize_deployment(platform, second)
    return project_id, first, second


async def state(platform: Platform, project_id: str) -> tuple[Project, dict[str, Alias]]:
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        aliases = await session.scalars(select(Alias).where(Alias.project_id == project_id))
        return project, {a.value: a for a in aliases}


def routed(platform: Platform, project: Project) -> dict[str, str]:
    """Router name -> rule, as written in the project's Traefik file."""
    config = traefik.read_dynamic(platform.settings).get(project.slug) or {}
    routers = (config.get("http") or {}).get("routers", {})
    return {name: router["rule"] for name, router in routers.items()}


async def row_of(platform: Platform, deployment_id: str) -> Deployment:
    async with session_scope(platform.sessions) as session:
        return await deployments.get(session=session, deployment_id=deployment_id)


async def test_a_route_traefik_loads_concludes_succeeded(
    client: httpx.AsyncClient, platform: Platform, alice: Account, traefik_api: FakeTraefikApi
) -> None:
    project_id = await new_project(client, alice)
    first = await ready_deployment(client, platform, alice, project_id, 9001)
    await finalize.finalize_deployment(platform, first)
    row = await row_of(platform, first)
    assert (row.status, row.conclusion, row.error) == (Status.completed, Conclusion.succeeded, None)
    project, aliases = await state(platform, project_id)
    assert aliases[project.slug].deployment_id == first
    host = f"Host(`{project.slug}.{platform.settings.deploy_domain}`)"
    assert host in routed(platform, project)[traefik.router_name(project.slug, first)]


async def test_a_route_traefik_never_loads_fails_and_the_previous_keeps_serving(
    client: httpx.AsyncClient, platform: Platform, alice: Account, traefik_api: FakeTraefikApi
) -> None:
    project_id = await new_project(client, alice)
    first = await ready_deployment(client, platform, alice, project_id, 9001)
    await finalize.finalize_deployment(platform, first)
    assert (await row_of(platform, first)).conclusion == Conclusion.succeeded
    traefik_api.loads = False
    second = await ready_deployment(client, platform, alice, project_id, 9002)

    await finalize.finalize_deployment(platform, second)

    failed = await row_of(platform, second)
    assert (failed.status, failed.conclusion) == (Status.completed, Conclusion.failed)
    assert failed.error is not None
    assert failed.error.startswith("Traefik did not load the route for ")
    assert failed.error.endswith(" within 1s; the previous deployment keeps serving")
    project, aliases = await state(platform, project_id)
    env, env_id = aliases[project.slug], aliases[f"{project.slug}-env-id-{failed.environment_id}"]
    assert env.deployment_id == env_id.deployment_id == first
    assert env.previous_deployment_id is None  # as before the failed switch
    assert not [
        a for a in aliases.values() if second in (a.deployment_id, a.previous_deployment_id)
    ]
    rules = routed(platform, project)
    assert list(rules) == [traefik.router_name(project.slug, first)]
    assert f"Host(`{project.slug}.{platform.settings.deploy_domain}`)" in rules[list(rules)[0]]
    # A second run of the job (arq may run it twice) changes nothing.
    await finalize.finalize_deployment(platform, second)
    assert (await state(platform, project_id))[1][project.slug].deployment_id == first


async def test_no_row_lock_is_held_while_traefik_is_awaited(
    client: httpx.AsyncClient, platform: Platform, alice: Account, traefik_api: FakeTraefikApi
) -> None:
    project_id = await new_project(client, alice)
    deployment_id = await ready_deployment(client, platform, alice, project_id, 9001)
    traefik_api.loads, traefik_api.delay = False, 0.2
    finalizing = asyncio.create_task(finalize.finalize_deployment(platform, deployment_id))
    try:
        await asyncio.wait_for(traefik_api.asked.wait(), 10)
        async with session_scope(platform.sessions) as session:
            locked = await session.scalar(
                select(Deployment.id)
                .where(Deployment.id == deployment_id)
                .with_for_update(nowait=True)
            )
            aliases = await session.scalars(
                select(Alias.id).where(Alias.project_id == project_id).with_for_update(nowait=True)
            )
            assert locked == deployment_id and len(list(aliases)) == 4
        assert not finalizing.done()  # the check ran during the wait
    finally:
        await finalizing
    assert (await row_of(platform, deployment_id)).conclusion == Conclusion.failed


async def test_a_rollback_traefik_never_loads_leaves_the_current_deployment(
    client: httpx.AsyncClient, platform: Platform, alice: Account, traefik_api: FakeTraefikApi
) -> None:
    project_id, first, second = await two_live_deployments(client, platform, alice)
    assert (await row_of(platform, second)).conclusion == Conclusion.succeeded
    traefik_api.loads = False

    response = await client.post(f"/api/v1/deployments/{second}/rollback", headers=alice.headers)

    assert response.status_code == 503, response.text
    assert "Traefik did not load the route for " in response.text
    project, aliases = await state(platform, project_id)
    env = aliases[project.slug]
    assert (env.deployment_id, env.previous_deployment_id) == (second, first)
    own = f"Host(`{project.slug}.{platform.settings.deploy_domain}`)"
    assert own in routed(platform, project)[traefik.router_name(project.slug, second)]
    assert own not in routed(platform, project)[traefik.router_name(project.slug, first)]
    traefik_api.loads = True
    response = await client.post(f"/api/v1/deployments/{second}/rollback", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert (await state(platform, project_id))[1][project.slug].deployment_id == first


async def test_without_traefik_api_finalize_does_not_wait(
    client: httpx.AsyncClient, platform: Platform, alice: Account, traefik_api: FakeTraefikApi
) -> None:
    """An external proxy: nothing answers at TRAEFIK_API_URL, so there is nothing to confirm."""
    project_id = await new_project(client, alice)
    deployment_id = await ready_deployment(client, platform, alice, project_id, 9001)
    traefik_api.loads = False
    platform.settings.traefik_api_url = "http://127.0.0.1:9"  # discard: nothing listens
    await finalize.finalize_deployment(platform, deployment_id)
    assert (await row_of(platform, deployment_id)).conclusion == Conclusion.succeeded
    assert not traefik_api.asked.is_set()


async def alias_events(platform: Platform, project_id: str) -> list[tuple[str, str | None]]:
    kinds = ("deployment.rolled_back", "deployment.promoted")
    async with session_scope(platform.sessions) as session:
        rows = await session.scalars(
            select(DomainEvent)
            .where(DomainEvent.project_id == project_id, DomainEvent.type.in_(kinds))
            .order_by(DomainEvent.id)
        )
        return [(e.type, e.deployment_id) for e in rows]


async def test_a_rollback_and_a_promote_are_events_once_traefik_serves_them(
    client: httpx.AsyncClient, platform: Platform, alice: Account, traefik_api: FakeTraefikApi
) -> None:
    """`deployment.rolled_back` and `deployment.promoted` are written once the switch is served,
    one each, naming the deployment now serving; a switch Traefik never loads writes none."""
    project_id, first, second = await two_live_deployments(client, platform, alice)
    traefik_api.loads = False
    refused = await client.post(f"/api/v1/deployments/{second}/rollback", headers=alice.headers)
    assert refused.status_code == 503, refused.text
    assert await alias_events(platform, project_id) == []

    traefik_api.loads = True
    rolled = await client.post(f"/api/v1/deployments/{second}/rollback", headers=alice.headers)
    assert rolled.status_code == 200, rolled.text
    promoted = await client.post(f"/api/v1/deployments/{second}/promote", headers=alice.headers)
    assert promoted.status_code == 200, promoted.text
    assert await alias_events(platform, project_id) == [
        ("deployment.rolled_back", first),
        ("deployment.promoted", second),
    ]
    async with session_scope(platform.sessions) as session:
        event = await session.scalar(
            select(DomainEvent).where(DomainEvent.type == "deployment.promoted")
        )
        assert event is not None and event.team_id == alice.team_id
        assert event.data["environment"] == "production"
        assert f"{(await state(platform, project_id))[0].slug}" in event.data["aliases"]


class Died(BaseException):
    """The request's process stopping while Traefik loads the route: no handler catches it."""


async def die(*args: object) -> bool:
    raise Died


async def switch_rows(platform: Platform) -> list[AliasSwitch]:
    async with session_scope(platform.sessions) as session:
        return list(await session.scalars(select(AliasSwitch)))


async def rollback_that_dies(platform: Platform, project_id: str, deployment_id: str) -> None:
    """A rollback whose process stops once the aliases moved, before Traefik answered; its
    pending switch then looks as old as the monitor waits for."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(traefik_wait, "wait_route_live", die)
        async with session_scope(platform.sessions) as session:
            row = await deployments.get(session=session, deployment_id=deployment_id)
            project = await session.get(Project, project_id)
            assert project is not None
            with pytest.raises(Died):
                await actions.rollback(platform, session, row, project)
    [pending] = await switch_rows(platform)
    assert await switches.reconcile_orphaned(platform) == 0  # its request may still be waiting
    async with session_scope(platform.sessions) as session:
        await session.execute(
            update(AliasSwitch).values(created_at=utcnow() - switches.ORPHANED_AFTER)
        )


async def test_a_rollback_whose_request_died_gets_its_event_from_the_monitor_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project_id, first, second = await two_live_deployments(client, platform, alice)

    await rollback_that_dies(platform, project_id, second)
    assert await alias_events(platform, project_id) == []  # not yet known to be served

    await reconcile(platform)  # the monitor's pass: Traefik serves it, so the event is written
    await reconcile(platform)
    assert await alias_events(platform, project_id) == [("deployment.rolled_back", first)]
    assert await switch_rows(platform) == []
    project, aliases = await state(platform, project_id)
    assert aliases[project.slug].deployment_id == first


async def test_a_rollback_whose_request_died_and_traefik_never_loaded_is_undone(
    client: httpx.AsyncClient, platform: Platform, alice: Account, traefik_api: FakeTraefikApi
) -> None:
    project_id, first, second = await two_live_deployments(client, platform, alice)
    traefik_api.loads = False

    await rollback_that_dies(platform, project_id, second)
    await reconcile(platform)

    assert await alias_events(platform, project_id) == []
    assert await switch_rows(platform) == []
    project, aliases = await state(platform, project_id)
    env = aliases[project.slug]
    assert (env.deployment_id, env.previous_deployment_id) == (second, first)
    assert traefik.router_name(project.slug, second) in routed(platform, project)
