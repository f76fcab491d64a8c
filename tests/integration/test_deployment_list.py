"""The deployments list after its load fixes (bench/control_plane.py): keyset paging through
rows that share a timestamp, the list's batch-loaded environments matching the single view,
its orjson-encoded items equal to the single view's model, and the deployment-hostname page
still served once that middleware became host-scoped."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from devpush.db import session_scope
from devpush.deployments.models import Conclusion, Deployment, InstanceHealth, Status
from devpush.platform import Platform
from tests.factories.auth import Account

BODY = {
    "name": "web",
    "repo_url": "http://127.0.0.1:9/acme/web.git",
    "start_command": "python3 app.py",
    "environments": [{"name": "staging", "branch_pattern": "dev*"}],
}


async def make_project(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects", json=BODY, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_pages_through_deployments_that_share_a_timestamp(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project_id = await make_project(client, alice)
    same = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    async with session_scope(platform.sessions) as session:
        for i in range(7):
            session.add(
                Deployment(
                    project_id=project_id,
                    branch="main",
                    trigger="api",
                    status=Status.completed,
                    conclusion=Conclusion.succeeded,
                    config={"runtime": "process"},
                    env_enc="x",
                    runtime="process",
                    created_at=same if i < 5 else same.replace(second=i),
                )
            )
    url = f"/api/v1/projects/{project_id}/deployments"
    seen: list[dict[str, str]] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=params, headers=alice.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    keys = [(d["created_at"], d["id"]) for d in seen]
    assert len(keys) == len(set(keys)) == 7  # every row once, none skipped at a tie
    assert keys == sorted(keys, reverse=True)


async def test_list_items_match_the_single_view(client: httpx.AsyncClient, alice: Account) -> None:
    project_id = await make_project(client, alice)
    url = f"/api/v1/projects/{project_id}/deployments"
    for branch in ("main", "dev-1", "feature/x"):
        created = await client.post(url, json={"branch": branch}, headers=alice.headers)
        assert created.status_code == 201, created.text
    listed = (await client.get(url, headers=alice.headers)).json()["items"]
    assert {d["branch"] for d in listed} == {"main", "dev-1", "feature/x"}
    for item in listed:
        one = await client.get(f"/api/v1/deployments/{item['id']}", headers=alice.headers)
        assert one.json()["urls"] == item["urls"]
    urls = {d["branch"]: d["urls"] for d in listed}
    assert urls["main"]["environment"].startswith("http://web.")
    assert urls["dev-1"]["environment"].startswith("http://web-env-staging.")
    assert "environment" not in urls["feature/x"]  # no environment matches that branch


async def test_unknown_deployment_host_gets_the_not_found_page(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    host = f"nothing-here.{platform.settings.deploy_domain}"
    for path in ("/", "/api/v1/teams"):
        response = await client.get(path, headers={"Host": host, **alice.headers})
        assert response.status_code == 404
        assert "Deployment not found" in response.text and host in response.text
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
    api = await client.get("/api/v1/teams", headers=alice.headers)
    assert api.status_code == 200 and api.json()[0]["slug"] == alice.team_slug


async def test_list_items_equal_the_single_view(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    """The list encodes plain dicts with orjson, the single view goes through DeploymentRead
    and pydantic: every field of every item, timestamps to the character, is the same."""
    project_id = await make_project(client, alice)
    base = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    rows = [
        {"status": Status.deploy, "conclusion": None, "timings": {}, "pr_number": 12},
        {
            "status": Status.completed,
            "conclusion": Conclusion.succeeded,
            "instance_health": InstanceHealth.crashed,
            "exit_code": 137,
            "crash_log": ["Traceback", "MemoryError"],
            "timings": {"queue": 0, "build": 12.5},
            "ready_at": base.replace(microsecond=250000),
            "concluded_at": base.replace(second=9),
        },
        {
            "status": Status.completed,
            "conclusion": Conclusion.failed,
            "error": 'the build exited with code 1: "quotes" \\ and ünïcode',
            "commit_sha": "a" * 40,
            "commit_message": "Fix\nthe thing",
            "commit_author": "Ada <ada@example.com>",
            "timings": {"queue": 0.01},
        },
    ]
    async with session_scope(platform.sessions) as session:
        for i, fields in enumerate(rows):
            session.add(
                Deployment(
                    project_id=project_id,
                    branch="dev-1" if i == 1 else "main",
                    trigger="api",
                    config={"runtime": "process", "port": 8000, "nested": {"a": [1, 2.5, None]}},
                    env_enc="x",
                    runtime="process",
                    created_at=base.replace(microsecond=i * 123457),
                    prepare_started_at=base,
                    **fields,
                )
            )
    listed = await client.get(f"/api/v1/projects/{project_id}/deployments", headers=alice.headers)
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/json"
    items = listed.json()["items"]
    assert len(items) == 3
    for item in items:
        one = await client.get(f"/api/v1/deployments/{item['id']}", headers=alice.headers)
        assert one.status_code == 200
        assert item == one.json()
