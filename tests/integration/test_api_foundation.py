"""The API skeleton: tokens, teams, authorization, errors, OpenAPI and health."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import httpx
from sqlalchemy import event, func, select, update

from devpush.app import WARM_CONNECTIONS, create_app
from devpush.auth.models import ApiToken
from devpush.bootstrap import build_platform
from devpush.db import session_scope, utcnow
from devpush.platform import Platform
from devpush.settings import Settings
from devpush.teams.models import Team
from tests.factories.auth import Account, token_for


async def test_token_lists_own_teams(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get("/api/v1/teams", headers=alice.headers)
    assert response.status_code == 200
    assert [t["id"] for t in response.json()] == [alice.team_id]
    assert response.json()[0]["role"] == "owner"


async def test_missing_wrong_and_expired_tokens_get_401(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    assert (await client.get("/api/v1/teams")).status_code == 401
    bad = await client.get("/api/v1/teams", headers={"Authorization": "Bearer dp_nope_nope"})
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "unauthorized"
    assert "unknown or revoked" in bad.json()["error"]["message"]
    junk = await client.get("/api/v1/teams", headers={"Authorization": "Bearer x" * 300})
    assert junk.status_code == 401
    expiring = await token_for(platform, alice.user_id, expires_days=1)
    async with session_scope(platform.sessions) as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.expires_at.is_not(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await client.get("/api/v1/teams", headers={"Authorization": f"Bearer {expiring}"})
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]


async def test_revoked_token_is_refused_at_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    second = await token_for(platform, alice.user_id, name="ci")
    headers = {"Authorization": f"Bearer {second}"}
    assert (await client.get("/api/v1/teams", headers=headers)).status_code == 200
    tokens = (await client.get("/api/v1/tokens", headers=alice.headers)).json()
    ci = next(t for t in tokens if t["name"] == "ci")
    assert "token" not in ci and "token_hash" not in ci
    assert (
        await client.delete(f"/api/v1/tokens/{ci['id']}", headers=alice.headers)
    ).status_code == 204
    assert (await client.get("/api/v1/teams", headers=headers)).status_code == 401


async def test_other_teams_resources_are_404(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    for path in (
        f"/api/v1/teams/{bob.team_id}",
        f"/api/v1/teams/{bob.team_slug}/members",
        f"/api/v1/teams/{bob.team_id}/projects",
    ):
        response = await client.get(path, headers=alice.headers)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    # revoking someone else's token is a 404 and changes nothing
    bob_tokens = (await client.get("/api/v1/tokens", headers=bob.headers)).json()
    response = await client.delete(f"/api/v1/tokens/{bob_tokens[0]['id']}", headers=alice.headers)
    assert response.status_code == 404
    assert (await client.get("/api/v1/teams", headers=bob.headers)).status_code == 200


async def test_create_team_and_members(client: httpx.AsyncClient, alice: Account) -> None:
    created = await client.post("/api/v1/teams", json={"name": "Acme Inc"}, headers=alice.headers)
    assert created.status_code == 201
    body = created.json()
    assert body["slug"] == "acme-inc" and body["role"] == "owner"
    members = await client.get(f"/api/v1/teams/{body['slug']}/members", headers=alice.headers)
    assert [m["email"] for m in members.json()] == ["alice@example.com"]


async def test_malformed_bodies_get_422_and_change_nothing(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    async with session_scope(platform.sessions) as session:
        before = await session.scalar(select(func.count()).select_from(Team))
    for body in ({}, {"name": ""}, {"name": 42}, {"name": "x" * 101}, {"name": "ok", "extra": 1}):
        response = await client.post("/api/v1/teams", json=body, headers=alice.headers)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert error["code"] == "invalid" and error["message"]
    response = await client.post(
        "/api/v1/teams",
        content=b"{not json",
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    async with session_scope(platform.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Team)) == before


async def test_token_creation_validates_scopes(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    bad = await client.post("/api/v1/tokens", json={"scopes": ["root"]}, headers=alice.headers)
    assert bad.status_code == 422
    read_only = await token_for(platform, alice.user_id, scopes=["read"])
    refused = await client.post(
        "/api/v1/tokens", json={"name": "x"}, headers={"Authorization": f"Bearer {read_only}"}
    )
    assert refused.status_code == 403
    created = await client.post(
        "/api/v1/tokens", json={"name": "deploy-bot", "scopes": ["deploy"]}, headers=alice.headers
    )
    assert created.status_code == 201
    assert created.json()["token"].startswith("dp_")


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/api/v1/openapi.json")).json()
    assert "/api/v1/teams" in doc["paths"]
    assert "/api/v1/tokens/{token_id}" in doc["paths"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert "ErrorBody" in doc["components"]["schemas"]


async def test_health_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_health_waits_out_a_busy_moment(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    """Every pooled connection busy for 3 s (as under `devpush update` on a loaded machine):
    /health waits for one instead of reporting PostgreSQL down."""
    pool = platform.engine.pool
    size = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
    async with contextlib.AsyncExitStack() as held:
        for _ in range(size):
            await held.enter_async_context(platform.engine.connect())
        probe = asyncio.create_task(client.get("/health"))
        await asyncio.sleep(3)
        assert not probe.done()  # it was waiting for a connection, not failing
    response = await probe
    assert response.status_code == 200, response.text
    assert response.json()["database"] == "ok"


async def test_the_app_connects_before_it_serves(settings: Settings) -> None:
    """Requests arriving together right after a start (a healthcheck next to a user's request,
    as after `devpush update` swaps colours) open no connection, so none waits on a DNS lookup
    that Podman's DNS server can stall during the swap."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        platform: Platform = app.state.platform
        redis_pool = platform.redis.connection_pool
        opened: list[object] = []
        event.listen(platform.engine.sync_engine, "connect", lambda *_: opened.append(1))
        redis_before = len(redis_pool._available_connections)  # type: ignore[attr-defined]
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as c:
            answers = await asyncio.gather(*(c.get("/health") for _ in range(WARM_CONNECTIONS)))
        assert [a.status_code for a in answers] == [200] * WARM_CONNECTIONS
        assert opened == []  # every request had a pooled PostgreSQL connection
        assert redis_before == WARM_CONNECTIONS
        assert len(redis_pool._available_connections) == WARM_CONNECTIONS  # type: ignore[attr-defined]


async def test_health_503_when_database_down(platform: Platform) -> None:
    down = Settings(  # type: ignore[call-arg]
        data_dir=platform.settings.data_dir,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none",
        redis_url=platform.settings.redis_url,
        secret_key="x",
    )
    broken = await build_platform(down)
    app = create_app(down)
    app.state.platform = broken
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        response = await c.get("/health")
    await broken.close()
    assert response.status_code == 503
    assert "PostgreSQL does not answer" in response.json()["reasons"][0]
