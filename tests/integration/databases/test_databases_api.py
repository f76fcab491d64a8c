"""Managed databases through the API (issue #20): attaching PostgreSQL and SQLite databases,
what a deployment gets as DATABASE_URL, the isolation between tenants' roles on the server,
the bad input that is refused without changing anything, and detaching."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import pytest

from devpush.databases import service
from devpush.databases.models import DatabaseCopy
from devpush.db import session_scope
from devpush.platform import Platform
from tests.factories.auth import Account
from tests.integration.test_projects_deployments_api import create_project as create_web_project

DATA = {"name": "data", "mount_path": "/data"}


async def create_project(client: httpx.AsyncClient, account: Account, **body: Any) -> Any:
    return await create_web_project(client, account, **{"name": "shop", **body})


async def attach(
    client: httpx.AsyncClient, account: Account, project_id: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/projects/{project_id}/databases", json=body, headers=account.headers
    )


async def env_of(platform: Platform, project_id: str, environment_id: str | None) -> dict[str, str]:
    async with session_scope(platform.sessions) as session:
        target = service.Target(project_id, environment_id, environment_id is None, "feat", None)
        project_config = {"volumes": [DATA]}

        async def host() -> str:
            return "10.0.0.1"

        return await service.env_for(
            session=session,
            settings=platform.settings,
            target=target,
            config=project_config,
            host_address=host,
        )


async def connect_as(url: str, admin_url: str, **override: str) -> asyncpg.Connection:
    """Connect with an app's DATABASE_URL, at the tests' server (apps use another host)."""
    app, server = urlsplit(url), urlsplit(admin_url)
    return await asyncpg.connect(
        host=server.hostname,
        port=server.port,
        user=override.get("user", app.username),
        password=override.get("password", unquote(app.password or "")),
        database=override.get("database", app.path.lstrip("/")),
    )


async def test_a_postgres_database_per_environment_reaches_deployments(
    client: httpx.AsyncClient, platform: Platform, alice: Account, pg_admin_url: str
) -> None:
    project = await create_project(client, alice)
    created = await attach(client, alice, project["id"], engine="postgres", name="main")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["env_var"] == "DATABASE_URL" and body["engine"] == "postgres"
    production = next(e for e in project["environments"] if e["is_production"])
    [copy] = body["copies"]
    assert copy["environment"] == production["name"] and copy["db_name"].startswith("dp_")
    env = await env_of(platform, project["id"], production["id"])
    url = urlsplit(env["DATABASE_URL"])
    assert (url.scheme, url.hostname, url.username) == ("postgresql", "10.0.0.1", copy["db_name"])
    conn = await connect_as(env["DATABASE_URL"], pg_admin_url)
    try:
        await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text)")
        await conn.execute("INSERT INTO orders (item) VALUES ('tea')")
        assert await conn.fetchval("SELECT item FROM orders") == "tea"
    finally:
        await conn.close()
    # a preview gets none by default; with previews=own, one of its own, empty
    assert await env_of(platform, project["id"], None) == {}
    changed = await client.patch(
        f"/api/v1/databases/{body['id']}", json={"previews": "own"}, headers=alice.headers
    )
    assert changed.status_code == 200 and changed.json()["previews"] == "own"
    preview = (await env_of(platform, project["id"], None))["DATABASE_URL"]
    assert urlsplit(preview).path != url.path
    conn = await connect_as(preview, pg_admin_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('orders')") is None
    finally:
        await conn.close()


async def test_another_projects_role_cannot_connect(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account, pg_admin_url: str
) -> None:
    mine = await create_project(client, alice)
    theirs = await create_project(client, bob, name="rival")
    for account, project in ((alice, mine), (bob, theirs)):
        response = await attach(client, account, project["id"], engine="postgres", name="main")
        assert response.status_code == 201, response.text
    production = {
        p["id"]: next(e for e in p["environments"] if e["is_production"])["id"]
        for p in (mine, theirs)
    }
    my_url = (await env_of(platform, mine["id"], production[mine["id"]]))["DATABASE_URL"]
    their_url = (await env_of(platform, theirs["id"], production[theirs["id"]]))["DATABASE_URL"]
    their_db = urlsplit(their_url).path.lstrip("/")
    with pytest.raises(asyncpg.PostgresError) as refused:
        await connect_as(my_url, pg_admin_url, database=their_db)
    assert "permission denied" in str(refused.value) or "pg_hba" in str(refused.value)
    with pytest.raises(asyncpg.PostgresError):  # nor into the platform's own database
        await connect_as(my_url, pg_admin_url, database=urlsplit(pg_admin_url).path.lstrip("/"))


async def test_a_sqlite_database_lives_on_a_volume(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await create_project(client, alice, volumes=[DATA])
    first = await attach(client, alice, project["id"], engine="postgres", name="main")
    assert first.status_code == 201
    created = await attach(
        client, alice, project["id"], engine="sqlite", name="cache", volume="data"
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["env_var"] == "CACHE_DATABASE_URL" and body["path"] == "/data/cache.sqlite3"
    production = next(e for e in project["environments"] if e["is_production"])
    env = await env_of(platform, project["id"], production["id"])
    assert env["CACHE_DATABASE_URL"] == "sqlite:////data/cache.sqlite3"
    listed = await client.get(f"/api/v1/projects/{project['id']}/databases", headers=alice.headers)
    assert [d["name"] for d in listed.json()] == ["main", "cache"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"engine": "mysql", "name": "main"}, 422, "engine"),
        ({"engine": "postgres", "name": "Main"}, 422, "lowercase"),
        ({"engine": "postgres", "name": "x; DROP ROLE postgres"}, 422, "lowercase"),
        ({"engine": "postgres", "name": "a" * 31}, 422, "name"),
        ({"engine": "postgres"}, 422, "name"),
        ({"engine": "postgres", "name": 5}, 422, "name"),
        ({"engine": "postgres", "name": "main", "owner": "x"}, 422, "owner"),
        ({"engine": "postgres", "name": "main", "previews": "all"}, 422, "previews"),
        ({"engine": "postgres", "name": "main", "env_var": "lower"}, 422, "uppercase"),
        ({"engine": "postgres", "name": "main", "backup_schedule": "often"}, 422, "backup"),
        ({"engine": "postgres", "name": "main", "backup_retention": 0}, 422, "retention"),
        ({"engine": "sqlite", "name": "main"}, 422, "volume"),
        ({"engine": "sqlite", "name": "main", "volume": "nope"}, 422, "volume"),
        ({"engine": "postgres", "name": "main", "volume": "data"}, 422, "only a SQLite"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    body: dict[str, Any],
    status: int,
    words: str,
) -> None:
    project = await create_project(client, alice, volumes=[DATA])
    response = await attach(client, alice, project["id"], **body)
    assert response.status_code == status, response.text
    assert words in response.text, response.text
    listed = await client.get(f"/api/v1/projects/{project['id']}/databases", headers=alice.headers)
    assert listed.json() == []
    async with session_scope(platform.sessions) as session:
        assert await session.get(DatabaseCopy, "x") is None


async def test_a_name_collision_is_refused(client: httpx.AsyncClient, alice: Account) -> None:
    project = await create_project(client, alice)
    assert (await attach(client, alice, project["id"], engine="postgres", name="main")).is_success
    again = await attach(client, alice, project["id"], engine="postgres", name="main")
    assert again.status_code == 409 and "already has a database named 'main'" in again.text
    clash = await attach(
        client, alice, project["id"], engine="postgres", name="other", env_var="DATABASE_URL"
    )
    assert clash.status_code == 409 and "DATABASE_URL" in clash.text
    listed = await client.get(f"/api/v1/projects/{project['id']}/databases", headers=alice.headers)
    assert [d["name"] for d in listed.json()] == ["main"]


async def test_an_unreachable_server_is_a_clear_error_and_leaves_nothing(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await create_project(client, alice)
    platform.settings.databases_admin_url = "postgresql://postgres:x@127.0.0.1:1/postgres"
    response = await attach(client, alice, project["id"], engine="postgres", name="main")
    assert response.status_code == 409, response.text
    assert "can't be reached" in response.text and "DEVPUSH_DATABASES_ADMIN_URL" in response.text
    listed = await client.get(f"/api/v1/projects/{project['id']}/databases", headers=alice.headers)
    assert listed.json() == []


async def test_another_teams_database_is_not_found(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    project = await create_project(client, alice)
    database = (await attach(client, alice, project["id"], engine="postgres", name="main")).json()
    for method, path, body in (
        ("GET", f"/api/v1/databases/{database['id']}", None),
        ("PATCH", f"/api/v1/databases/{database['id']}", {"previews": "own"}),
        ("DELETE", f"/api/v1/databases/{database['id']}", None),
        ("GET", f"/api/v1/projects/{project['id']}/databases", None),
        (
            "POST",
            f"/api/v1/projects/{project['id']}/databases",
            {"engine": "postgres", "name": "x"},
        ),
    ):
        response = await client.request(method, path, json=body, headers=bob.headers)
        assert response.status_code == 404, (method, path, response.text)
    shown = await client.get(f"/api/v1/databases/{database['id']}", headers=alice.headers)
    assert shown.status_code == 200 and shown.json()["previews"] == "none"


async def test_detaching_drops_every_copy_and_deleting_the_project_asks(
    client: httpx.AsyncClient, platform: Platform, alice: Account, pg_admin_url: str
) -> None:
    project = await create_project(client, alice)
    database = (await attach(client, alice, project["id"], engine="postgres", name="main")).json()
    refused = await client.delete(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert refused.status_code == 409 and "database main" in refused.text
    db_name = database["copies"][0]["db_name"]
    gone = await client.delete(f"/api/v1/databases/{database['id']}", headers=alice.headers)
    assert gone.status_code == 204, gone.text
    conn = await asyncpg.connect(pg_admin_url)
    try:
        assert await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db_name) is None
        assert await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", db_name) is None
    finally:
        await conn.close()
    deleted = await client.delete(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert deleted.status_code == 202, deleted.text
