"""Backups of managed databases (issue #20): a PostgreSQL copy backed up, changed and restored
(the restored tables owned by the copy's role, so the app can still write them), retention, a
failed backup that keeps the previous one, a SQLite file on a volume, the schedule firing once
per slot with two monitors, and the refusals of the API."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from sqlalchemy import func, select

from devpush import crypto
from devpush.databases import backups, server
from devpush.databases.models import DatabaseBackup, DatabaseCopy
from devpush.db import session_scope, utcnow
from devpush.platform import Platform
from devpush.runtime import volumes as host_volumes
from tests.factories.auth import Account
from tests.integration.test_projects_deployments_api import create_project as create_web_project

DATA = {"name": "data", "mount_path": "/data"}
BACKUPS = "/api/v1/databases/{}/backups"


async def attach(
    client: httpx.AsyncClient, account: Account, **body: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    project_body = {"volumes": [DATA]} if body.get("engine") == "sqlite" else {}
    project = await create_web_project(client, account, name="shop", **project_body)
    created = await client.post(
        f"/api/v1/projects/{project['id']}/databases", json=body, headers=account.headers
    )
    assert created.status_code == 201, created.text
    return project, created.json()


async def connect_copy(platform: Platform, pg_admin_url: str, copy_id: str) -> asyncpg.Connection:
    """The copy's database as its own role, as an app connects."""
    async with session_scope(platform.sessions) as session:
        copy = await session.get(DatabaseCopy, copy_id)
        assert copy is not None and copy.db_name and copy.password_enc
        name, password = copy.db_name, crypto.decrypt(copy.password_enc)
    return await asyncpg.connect(
        host="127.0.0.1",
        port=urlsplit(pg_admin_url).port,
        user=name,
        password=password,
        database=name,
    )


async def back_up(client: httpx.AsyncClient, account: Account, database_id: str) -> Any:
    response = await client.post(
        BACKUPS.format(database_id), json={"environment": "production"}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def rows_of(platform: Platform, database_id: str) -> list[DatabaseBackup]:
    async with session_scope(platform.sessions) as session:
        found = await session.scalars(
            select(DatabaseBackup)
            .where(DatabaseBackup.database_id == database_id)
            .order_by(DatabaseBackup.created_at)
        )
        return list(found)


async def test_a_postgres_backup_restores_the_rows_and_the_role_keeps_them(
    client: httpx.AsyncClient, platform: Platform, alice: Account, pg_admin_url: str
) -> None:
    _, database = await attach(client, alice, engine="postgres", name="main")
    [copy] = database["copies"]
    conn = await connect_copy(platform, pg_admin_url, copy["id"])
    try:
        await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        await conn.execute("INSERT INTO notes VALUES (1, 'first'), (2, 'second')")
        taken = await back_up(client, alice, database["id"])
        assert taken["status"] == "succeeded" and taken["size_bytes"] > 0, taken
        assert taken["environment"] == "production" and taken["trigger"] == "manual"
        [row] = await rows_of(platform, database["id"])
        assert row.path and Path(row.path).stat().st_mode & 0o777 == 0o600
        assert Path(row.path).parent.stat().st_mode & 0o777 == 0o700
        await conn.execute("UPDATE notes SET body = 'changed'; INSERT INTO notes VALUES (3, 'x')")
        await conn.execute("CREATE TABLE later (id int)")
    finally:
        await conn.close()

    restored = await client.post(
        f"/api/v1/databases/{database['id']}/restore",
        json={"backup_id": taken["id"]},
        headers=alice.headers,
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["trigger"] == "restore-point"
    assert restored.json()["status"] == "succeeded"

    conn = await connect_copy(platform, pg_admin_url, copy["id"])
    try:
        assert [tuple(r) for r in await conn.fetch("SELECT * FROM notes ORDER BY id")] == [
            (1, "first"),
            (2, "second"),
        ]
        assert await conn.fetchval("SELECT to_regclass('later')") is None
        owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'")
        assert owner == copy["db_name"]
        await conn.execute("INSERT INTO notes VALUES (3, 'after the restore')")
        await conn.execute("ALTER TABLE notes ADD COLUMN tag text")
    finally:
        await conn.close()
    listed = await client.get(BACKUPS.format(database["id"]), headers=alice.headers)
    assert listed.status_code == 200, listed.text
    assert [(b["trigger"], b["status"]) for b in listed.json()] == [
        ("restore-point", "succeeded"),
        ("manual", "succeeded"),
    ]


async def test_retention_keeps_the_newest_and_a_failure_keeps_the_previous(
    client: httpx.AsyncClient, platform: Platform, alice: Account, pg_admin_url: str
) -> None:
    _, database = await attach(client, alice, engine="postgres", name="main", backup_retention=2)
    taken = [await back_up(client, alice, database["id"]) for _ in range(3)]
    assert all(b["status"] == "succeeded" for b in taken)
    rows = await rows_of(platform, database["id"])
    assert [r.id for r in rows] == [taken[1]["id"], taken[2]["id"]]
    directory = Path(rows[0].path or "").parent
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        Path(r.path or "").name for r in rows
    )

    await server.drop(pg_admin_url, database["copies"][0]["db_name"])
    failed = await back_up(client, alice, database["id"])
    assert failed["status"] == "failed" and "missing" in failed["error"], failed
    assert "\n" not in failed["error"] and failed["size_bytes"] is None
    rows = await rows_of(platform, database["id"])
    assert [(r.id, r.status) for r in rows] == [
        (taken[1]["id"], "succeeded"),
        (taken[2]["id"], "succeeded"),
        (failed["id"], "failed"),
    ]
    assert len(list(directory.iterdir())) == 2  # no partial file stays behind


async def test_a_sqlite_file_on_a_volume_is_backed_up_and_restored(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project, database = await attach(client, alice, engine="sqlite", name="app", volume="data")
    production = next(e for e in project["environments"] if e["is_production"])
    missing = await back_up(client, alice, database["id"])
    assert missing["status"] == "failed" and "holds no data yet" in missing["error"]
    directory = host_volumes.host_dir(
        host_volumes.root_of(platform.settings.data_path), project["id"], production["id"], "data"
    )
    directory.mkdir(parents=True)
    live = directory / "app.sqlite3"
    with sqlite3.connect(live) as db:
        db.executescript("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('first');")
    taken = await back_up(client, alice, database["id"])
    assert taken["status"] == "succeeded", taken
    with sqlite3.connect(live) as db:
        db.execute("UPDATE notes SET body = 'changed'")
    restored = await client.post(
        f"/api/v1/databases/{database['id']}/restore",
        json={"backup_id": taken["id"]},
        headers=alice.headers,
    )
    assert restored.status_code == 200, restored.text
    with sqlite3.connect(live) as db:
        assert db.execute("SELECT body FROM notes").fetchall() == [("first",)]

    # The app owns its volume: a link it puts there is never followed by the platform (root).
    outside = directory.parent / "host-file"
    outside.write_bytes(b"not yours")
    live.unlink()
    live.symlink_to(outside)
    linked = await back_up(client, alice, database["id"])
    assert linked["status"] == "failed" and "symbolic link" in linked["error"], linked
    refused = await client.post(
        f"/api/v1/databases/{database['id']}/restore",
        json={"backup_id": taken["id"]},
        headers=alice.headers,
    )
    assert refused.status_code == 409 and "symbolic link" in refused.text, refused.text
    assert outside.read_bytes() == b"not yours"


async def test_the_schedule_fires_once_per_slot_with_two_monitors(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    _, database = await attach(
        client, alice, engine="postgres", name="main", backup_schedule="* * * * *"
    )
    now = utcnow() + timedelta(minutes=1)
    first, second = await asyncio.gather(backups.due(platform, now), backups.due(platform, now))
    assert len(first) + len(second) == 1
    assert await backups.due(platform, now) == []  # the slot's backup is recorded
    later = await backups.due(platform, now + timedelta(minutes=1))
    assert len(later) == 1
    rows = await rows_of(platform, database["id"])
    assert [(r.trigger, r.status) for r in rows] == [("schedule", "succeeded")] * 2


async def test_the_api_refuses_without_changing_anything(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account
) -> None:
    _, database = await attach(client, alice, engine="postgres", name="main")
    project_b = await create_web_project(client, bob, name="other")
    other = await client.post(
        f"/api/v1/projects/{project_b['id']}/databases",
        json={"engine": "postgres", "name": "main"},
        headers=bob.headers,
    )
    theirs = await back_up(client, bob, other.json()["id"])
    attempts: list[tuple[str, str, dict[str, str] | None]] = [
        ("POST", BACKUPS.format(database["id"]), {"environment": "production"}),
        ("GET", BACKUPS.format(database["id"]), None),
        ("POST", f"/api/v1/databases/{database['id']}/restore", {"backup_id": "x" * 32}),
    ]
    for method, path, sent in attempts:
        response = await client.request(method, path, json=sent, headers=bob.headers)
        assert response.status_code == 404, (path, response.text)

    restored = await client.post(
        f"/api/v1/databases/{database['id']}/restore",
        json={"backup_id": theirs["id"]},
        headers=alice.headers,
    )
    assert restored.status_code == 404, restored.text
    bodies: list[dict[str, object]] = [
        {},
        {"backup_id": 5},
        {"backup_id": "a", "extra": 1},
        {"backup_id": "x" * 40},
        {"environment": "production"},
    ]
    for body in bodies:
        response = await client.post(
            f"/api/v1/databases/{database['id']}/restore", json=body, headers=alice.headers
        )
        assert response.status_code == 422, (body, response.text)
    bodies = [{"environment": 3}, {"environment": ""}, {"env": "production"}]
    for body in bodies:
        response = await client.post(
            BACKUPS.format(database["id"]), json=body, headers=alice.headers
        )
        assert response.status_code == 422, (body, response.text)
    unknown = await client.post(
        BACKUPS.format(database["id"]), json={"environment": "nope"}, headers=alice.headers
    )
    assert unknown.status_code == 404
    async with session_scope(platform.sessions) as session:
        count = await session.scalar(select(func.count()).select_from(DatabaseBackup))
    assert count == 1  # bob's only


async def test_a_restore_keeps_its_backup_even_at_retention_one(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    _, database = await attach(client, alice, engine="postgres", name="main", backup_retention=1)
    taken = await back_up(client, alice, database["id"])
    restored = await client.post(
        f"/api/v1/databases/{database['id']}/restore",
        json={"backup_id": taken["id"]},
        headers=alice.headers,
    )
    assert restored.status_code == 200, restored.text
    rows = await rows_of(platform, database["id"])
    assert [r.id for r in rows] == [taken["id"], restored.json()["id"]]
    assert all(Path(r.path or "").is_file() for r in rows)
    again = await back_up(client, alice, database["id"])  # retention applies again
    assert [r.id for r in await rows_of(platform, database["id"])] == [again["id"]]
