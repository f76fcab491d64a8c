"""The database console through the API: tables, pages of rows and SQL statements on a
PostgreSQL copy (as the copy's own role, read-only unless an admin asks for write) and on a
SQLite file on the environment's volume; hostile table names, another team's database and
another project's role get nowhere, and nothing they try changes anything."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy import select

from devpush import crypto
from devpush.databases import service
from devpush.databases.models import DatabaseCopy
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.runtime.volumes import host_dir, root_of
from devpush.teams.models import Role
from tests.factories.auth import Account, add_member, make_account
from tests.integration.test_projects_deployments_api import create_project

API = "/api/v1"
DATA = {"name": "data", "mount_path": "/data"}


async def attach_postgres(platform: Platform, project_id: str) -> str:
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        database = await service.create(
            session=session,
            settings=platform.settings,
            project=project,
            engine="postgres",
            name="main",
        )
        return database.id


async def copy_of(platform: Platform, database_id: str) -> DatabaseCopy:
    """The production environment's copy."""
    async with session_scope(platform.sessions) as session:
        copy = await session.scalar(
            select(DatabaseCopy)
            .join(Environment, Environment.id == DatabaseCopy.environment_id)
            .where(DatabaseCopy.database_id == database_id, Environment.is_production)
        )
        assert copy is not None
        return copy


async def connect_as(copy: DatabaseCopy, admin_url: str, database: str | None = None) -> Any:
    """The copy's own role at the tests' server, as an app would connect."""
    server = urlsplit(admin_url)
    assert copy.password_enc is not None
    return await asyncpg.connect(
        host=server.hostname,
        port=server.port,
        user=copy.db_name,
        password=crypto.decrypt(copy.password_enc),
        database=database or copy.db_name,
    )


@pytest.fixture
async def orders(
    client: httpx.AsyncClient, platform: Platform, alice: Account, pg_admin_url: str
) -> dict[str, Any]:
    """Alice's project with a postgres database whose production copy has 120 orders."""
    project = await create_project(client, alice, name="shop")
    database_id = await attach_postgres(platform, project["id"])
    copy = await copy_of(platform, database_id)
    conn = await connect_as(copy, pg_admin_url)
    try:
        await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text, paid numeric)")
        await conn.execute(
            "INSERT INTO orders SELECT i, 'item ' || i, i * 1.5 FROM generate_series(1, 120) i"
        )
        await conn.execute('CREATE TABLE "we""ird" (x bytea)')
        await conn.execute('INSERT INTO "we""ird" VALUES (\'\\x00ff\')')
    finally:
        await conn.close()
    return {"project": project, "database_id": database_id, "copy": copy}


async def count_orders(copy: DatabaseCopy, admin_url: str) -> int:
    conn = await connect_as(copy, admin_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders"))
    finally:
        await conn.close()


async def run(
    client: httpx.AsyncClient, account: Account, database_id: str, sql: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"{API}/databases/{database_id}/query", json={"sql": sql, **body}, headers=account.headers
    )


async def test_tables_rows_and_a_select(
    client: httpx.AsyncClient, alice: Account, orders: dict[str, Any]
) -> None:
    database_id = orders["database_id"]
    listed = await client.get(f"{API}/databases/{database_id}/tables", headers=alice.headers)
    assert listed.status_code == 200, listed.text
    assert [(t["schema"], t["key"], t["kind"]) for t in listed.json()] == [
        ("public", "orders", "table"),
        ("public", 'we"ird', "table"),
    ]
    seen: list[int] = []
    offset, pages = 0, 0
    while True:
        page = await client.get(
            f"{API}/databases/{database_id}/tables/orders",
            params={"limit": 50, "offset": offset, "environment": "production"},
            headers=alice.headers,
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["columns"] == ["id", "item", "paid"]
        seen += [row[0] for row in body["rows"]]
        pages += 1
        if not body["has_more"]:
            break
        offset += 50
    assert seen == list(range(1, 121)) and pages == 3
    too_many = await client.get(
        f"{API}/databases/{database_id}/tables/orders", params={"limit": 101}, headers=alice.headers
    )
    assert too_many.status_code == 422, too_many.text
    weird = await client.get(f'{API}/databases/{database_id}/tables/we"ird', headers=alice.headers)
    assert weird.status_code == 200 and weird.json()["rows"] == [["\\x00ff"]], weird.text
    result = await run(client, alice, database_id, "SELECT id, paid FROM orders WHERE id <= 2")
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["columns"] == ["id", "paid"] and body["rows"] == [[1, "1.5"], [2, "3.0"]]
    assert body["rowcount"] == 2 and not body["truncated"] and body["elapsed_ms"] >= 0
    many = await run(client, alice, database_id, "SELECT generate_series(1, 2000)")
    assert many.status_code == 200 and many.json()["truncated"] and len(many.json()["rows"]) == 500


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO orders VALUES (999, 'x', 1)",
        "DELETE FROM orders",
        "DROP TABLE orders",
        "CREATE TABLE other (x int)",
        "UPDATE orders SET item = 'x' RETURNING id",
    ],
)
async def test_writes_are_refused_without_write(
    client: httpx.AsyncClient, alice: Account, orders: dict[str, Any], pg_admin_url: str, sql: str
) -> None:
    refused = await run(client, alice, orders["database_id"], sql)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"].startswith("read-only: cannot execute"), refused.text
    assert "admins can run it with write" in refused.text and "Traceback" not in refused.text
    assert await count_orders(orders["copy"], pg_admin_url) == 120


async def test_an_admin_writes_and_a_member_may_not(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    bob: Account,
    orders: dict[str, Any],
    pg_admin_url: str,
) -> None:
    database_id = orders["database_id"]
    await add_member(platform, bob, alice.team_id, Role.member)
    denied = await run(client, bob, database_id, "DELETE FROM orders", write=True)
    assert denied.status_code == 403, denied.text
    read = await run(client, bob, database_id, "SELECT count(*) AS n FROM orders")
    assert read.status_code == 200 and read.json()["rows"] == [[120]], read.text
    done = await run(client, alice, database_id, "DELETE FROM orders WHERE id > 100", write=True)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "DELETE 20" and done.json()["rowcount"] == 20
    assert await count_orders(orders["copy"], pg_admin_url) == 100
    broken = await run(client, alice, database_id, "SELEC 1", write=True)
    assert broken.status_code == 422 and "syntax error" in broken.text, broken.text
    two = await run(client, alice, database_id, "DELETE FROM orders; SELECT 1", write=True)
    assert two.status_code == 422 and "multiple commands" in two.text, two.text
    assert await count_orders(orders["copy"], pg_admin_url) == 100


async def test_bad_input_changes_nothing(
    client: httpx.AsyncClient, alice: Account, orders: dict[str, Any], pg_admin_url: str
) -> None:
    database_id = orders["database_id"]
    for table in ('x"; drop table orders; --', "nope", "pg_catalog.pg_authid", "orders;"):
        page = await client.get(
            f"{API}/databases/{database_id}/tables/{table}", headers=alice.headers
        )
        assert page.status_code == 404, (table, page.text)
    for body in (
        {"sql": "x" * 20_001},
        {"sql": ""},
        {"sql": "SELECT 1", "owner": "x"},
        {"sql": "SELECT 1", "environment": "nope"},
    ):
        response = await client.post(
            f"{API}/databases/{database_id}/query", json=body, headers=alice.headers
        )
        assert response.status_code in (404, 422), (body, response.text)
    slow = await run(client, alice, database_id, "SELECT pg_sleep(10)")
    assert slow.status_code == 422 and "longer than 5 s" in slow.text, slow.text
    assert await count_orders(orders["copy"], pg_admin_url) == 120


async def test_another_teams_database_is_not_found(
    client: httpx.AsyncClient, platform: Platform, orders: dict[str, Any]
) -> None:
    carol = await make_account(platform, "carol@example.com")
    database_id = orders["database_id"]
    for method, path, body in (
        ("GET", f"{API}/databases/{database_id}/tables", None),
        ("GET", f"{API}/databases/{database_id}/tables/orders", None),
        ("POST", f"{API}/databases/{database_id}/query", {"sql": "SELECT 1"}),
        ("POST", f"{API}/databases/{database_id}/query", {"sql": "SELECT 1", "write": True}),
        ("GET", f"{API}/databases/{'x' * 40}/tables", None),
    ):
        response = await client.request(method, path, json=body, headers=carol.headers)
        assert response.status_code == 404, (method, path, response.text)


async def test_a_copys_role_cannot_read_another_projects_database(
    client: httpx.AsyncClient, platform: Platform, alice: Account, orders: dict[str, Any],
    pg_admin_url: str,
) -> None:  # fmt: skip
    other = await create_project(client, alice, name="blog")
    theirs = await copy_of(platform, await attach_postgres(platform, other["id"]))
    with pytest.raises(asyncpg.PostgresError) as refused:
        await connect_as(orders["copy"], pg_admin_url, database=theirs.db_name)
    assert "permission denied" in str(refused.value) or "pg_hba" in str(refused.value)


async def test_a_sqlite_database_on_a_volume(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await create_project(client, alice, name="notes", volumes=[DATA])
    created = await client.post(
        f"{API}/projects/{project['id']}/databases",
        json={"engine": "sqlite", "name": "notes", "volume": "data"},
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    database_id = created.json()["id"]
    missing = await client.get(f"{API}/databases/{database_id}/tables", headers=alice.headers)
    assert missing.status_code == 404 and "no data" in missing.text, missing.text
    production = next(e for e in project["environments"] if e["is_production"])
    directory = host_dir(
        root_of(platform.settings.data_path), project["id"], production["id"], "data"
    )
    directory.mkdir(parents=True)
    path = directory / "notes.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, raw BLOB)")
        conn.executemany(
            "INSERT INTO notes (body, raw) VALUES (?, ?)", [(f"n{i}", b"\x01") for i in range(30)]
        )
    conn.close()
    listed = await client.get(f"{API}/databases/{database_id}/tables", headers=alice.headers)
    assert [t["key"] for t in listed.json()] == ["notes"], listed.text
    page = await client.get(
        f"{API}/databases/{database_id}/tables/notes",
        params={"limit": 20, "offset": 20},
        headers=alice.headers,
    )
    assert page.status_code == 200, page.text
    assert page.json()["rows"][0] == [21, "n20", "\\x01"] and not page.json()["has_more"]
    selected = await run(client, alice, database_id, "SELECT count(*) FROM notes")
    assert selected.json()["rows"] == [[30]], selected.text
    for sql in ("DELETE FROM notes", "DROP TABLE notes", f"ATTACH '{path}' AS other"):
        refused = await run(client, alice, database_id, sql)
        assert refused.status_code == 422, (sql, refused.text)
    assert "read-only" in (await run(client, alice, database_id, "DELETE FROM notes")).text
    attach = await run(client, alice, database_id, f"ATTACH '{path}' AS other", write=True)
    assert attach.status_code == 422, attach.text
    vacuum = await run(client, alice, database_id, f"VACUUM INTO '{path}.copy'", write=True)
    assert vacuum.status_code == 422 and not Path(f"{path}.copy").exists(), vacuum.text
    deleted = await run(client, alice, database_id, "DELETE FROM notes WHERE id > 10", write=True)
    assert deleted.status_code == 200 and deleted.json()["rowcount"] == 20, deleted.text
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (10,)
    conn.close()
    path.with_name("notes.sqlite3-journal").symlink_to("/etc/hostname")
    linked = await run(client, alice, database_id, "SELECT 1")
    assert linked.status_code == 422 and "symbolic link" in linked.text, linked.text
