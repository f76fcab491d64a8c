"""The project's Databases page: the databases with their copies, a table and its rows, the
SQL console's result and errors, the "write" box for admins only (a member's write is refused),
and another team's project answering 404."""

from __future__ import annotations

import html

import pytest

from devpush.platform import Platform
from devpush.teams.models import Role
from tests.factories.auth import Account, add_member
from tests.integration.databases.test_console import attach_postgres, connect_as, copy_of
from tests.integration.web.conftest import Browser
from tests.integration.web.test_web_smoke import make_project


@pytest.fixture
async def shop(platform: Platform, alice: Account, pg_admin_url: str) -> dict[str, str]:
    """Alice's project with a postgres database whose production copy holds three orders."""
    project_id, _ = await make_project(platform, alice.team_id)
    database_id = await attach_postgres(platform, project_id)
    copy = await copy_of(platform, database_id)
    conn = await connect_as(copy, pg_admin_url)
    try:
        await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        await conn.execute("INSERT INTO orders VALUES (1, 'tea'), (2, 'cake'), (3, NULL)")
    finally:
        await conn.close()
    return {"project_id": project_id, "database_id": database_id}


async def test_an_admin_browses_and_queries(alice_web: Browser, shop: dict[str, str]) -> None:
    base = f"/projects/{shop['project_id']}/databases"
    page = await alice_web.get(base)
    assert page.status_code == 200, page.text[:500]
    assert 'data-database="main"' in page.text and "DATABASE_URL" in page.text
    assert 'data-table="orders"' in page.text and 'name="write"' in page.text
    assert f'href="{base}"' in page.text  # the project's navigation links the page
    rows = await alice_web.get(
        base,
        params={"database": shop["database_id"], "environment": "production", "table": "orders"},
    )
    assert rows.status_code == 200 and "cake" in rows.text and "NULL" in rows.text, rows.text[:500]
    form = {"database_id": shop["database_id"], "environment": "production"}
    result = await alice_web.post(
        f"{base}/query", {**form, "sql": "SELECT item FROM orders WHERE id = 2"}
    )
    assert result.status_code == 200, result.text[:500]
    assert 'id="result"' in result.text and '<td class="mono">cake</td>' in result.text
    refused = await alice_web.post(f"{base}/query", {**form, "sql": "DELETE FROM orders"})
    assert refused.status_code == 422 and 'data-error-for="sql"' in refused.text
    assert "read-only: cannot execute DELETE" in html.unescape(refused.text)
    written = await alice_web.post(
        f"{base}/query", {**form, "sql": "DELETE FROM orders WHERE id = 3", "write": "on"}
    )
    assert written.status_code == 200 and "DELETE 1" in written.text, written.text[:500]
    hostile = await alice_web.get(
        base, params={"database": shop["database_id"], "table": 'x"; drop table orders; --'}
    )
    assert hostile.status_code == 200 and 'data-error-for="browse"' in hostile.text
    count = await alice_web.post(f"{base}/query", {**form, "sql": "SELECT count(*) FROM orders"})
    assert '<td class="mono">2</td>' in count.text, count.text[:500]
    no_csrf = await alice_web.post(f"{base}/query", {**form, "sql": "SELECT 1"}, csrf=False)
    assert no_csrf.status_code == 403, no_csrf.text[:300]


async def test_a_member_reads_but_may_not_write(
    platform: Platform, alice: Account, bob: Account, bob_web: Browser, shop: dict[str, str]
) -> None:
    await add_member(platform, bob, alice.team_id, Role.member)
    base = f"/projects/{shop['project_id']}/databases"
    page = await bob_web.get(base)
    assert page.status_code == 200 and 'data-table="orders"' in page.text, page.text[:500]
    assert 'name="write"' not in page.text
    form = {"database_id": shop["database_id"], "environment": "production"}
    read = await bob_web.post(f"{base}/query", {**form, "sql": "SELECT count(*) FROM orders"})
    assert read.status_code == 200 and '<td class="mono">3</td>' in read.text
    denied = await bob_web.post(
        f"{base}/query", {**form, "sql": "DELETE FROM orders", "write": "on"}
    )
    assert denied.status_code == 403, denied.text[:500]


async def test_another_teams_project_is_not_found(bob_web: Browser, shop: dict[str, str]) -> None:
    base = f"/projects/{shop['project_id']}/databases"
    assert (await bob_web.get(base)).status_code == 404
    form = {"database_id": shop["database_id"], "sql": "SELECT 1"}
    assert (await bob_web.post(f"{base}/query", form)).status_code == 404
