"""API conventions: env vars write-only with audited reveal, the audit log, Idempotency-Key
replay, and per-token rate limits."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from devpush.db import session_scope
from devpush.deployments.models import Deployment
from devpush.platform import Platform
from devpush.projects.models import EnvVar
from devpush.teams.models import Role
from tests.factories.auth import Account, add_member, make_account, token_for


async def project_of(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={
            "name": "api",
            "start_command": "x",
            "environments": [{"name": "staging", "branch_pattern": "dev"}],
        },
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_env_vars_are_write_only_and_reveal_is_audited(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await project_of(client, alice)
    put = await client.put(
        f"/api/v1/projects/{project}/env/DB_PASSWORD",
        json={"value": "hunter2!", "secret": True},
        headers=alice.headers,
    )
    assert put.status_code == 200 and "hunter2" not in put.text
    staged = await client.put(
        f"/api/v1/projects/{project}/env/DB_PASSWORD",
        params={"environment": "staging"},
        json={"value": "stage-pw"},
        headers=alice.headers,
    )
    assert staged.status_code == 200 and staged.json()["environment"] == "staging"
    listed = await client.get(f"/api/v1/projects/{project}/env", headers=alice.headers)
    assert [(v["key"], v["environment"]) for v in listed.json()] == [
        ("DB_PASSWORD", None),
        ("DB_PASSWORD", "staging"),
    ]
    assert "hunter2" not in listed.text and "stage-pw" not in listed.text
    async with session_scope(platform.sessions) as session:
        stored = list(await session.scalars(select(EnvVar.value_enc)))
    assert stored and all("hunter2" not in v and "stage-pw" not in v for v in stored)

    deploy_only = await token_for(platform, alice.user_id, scopes=["read", "deploy"])
    refused = await client.post(
        f"/api/v1/projects/{project}/env/DB_PASSWORD/reveal",
        headers={"Authorization": f"Bearer {deploy_only}"},
    )
    assert refused.status_code == 403
    revealed = await client.post(
        f"/api/v1/projects/{project}/env/DB_PASSWORD/reveal", headers=alice.headers
    )
    assert revealed.json()["value"] == "hunter2!"
    audit = await client.get(f"/api/v1/teams/{alice.team_slug}/audit", headers=alice.headers)
    actions = [e["action"] for e in audit.json()["items"]]
    assert actions[:3] == ["env.reveal", "env.set", "env.set"]
    assert "hunter2" not in audit.text

    gone = await client.delete(
        f"/api/v1/projects/{project}/env/DB_PASSWORD",
        params={"environment": "staging"},
        headers=alice.headers,
    )
    assert gone.status_code == 204
    missing = await client.delete(
        f"/api/v1/projects/{project}/env/DB_PASSWORD",
        params={"environment": "staging"},
        headers=alice.headers,
    )
    assert missing.status_code == 404


async def test_env_var_failure_paths(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account
) -> None:
    project = await project_of(client, alice)
    url = f"/api/v1/projects/{project}/env"
    for key, body, params in [
        ("1BAD", {"value": "x"}, None),
        ("OK", {"value": "a\x00b"}, None),
        ("OK", {}, None),
        ("OK", {"value": 5}, None),
        ("OK", {"value": "x"}, {"environment": "nope"}),
        ("OK", {"value": "x" * 70000}, None),
    ]:
        response = await client.put(f"{url}/{key}", json=body, params=params, headers=alice.headers)
        assert response.status_code == 422, (key, body, response.text)
    assert (await client.get(url, headers=alice.headers)).json() == []
    assert (await client.get(url, headers=bob.headers)).status_code == 404
    assert (
        await client.put(f"{url}/OK", json={"value": "x"}, headers=bob.headers)
    ).status_code == 404
    member = await make_account(platform, "mia@example.com")
    await add_member(platform, member, alice.team_id, Role.member)
    assert (
        await client.put(f"{url}/OK", json={"value": "x"}, headers=member.headers)
    ).status_code == 403
    assert (
        await client.get(f"/api/v1/teams/{alice.team_slug}/audit", headers=member.headers)
    ).status_code == 403
    assert (
        await client.get(f"/api/v1/teams/{alice.team_slug}/audit", headers=bob.headers)
    ).status_code == 404


async def test_audit_log_pages_backwards(client: httpx.AsyncClient, alice: Account) -> None:
    project = await project_of(client, alice)
    for i in range(5):
        await client.put(
            f"/api/v1/projects/{project}/env/K{i}", json={"value": "v"}, headers=alice.headers
        )
    url = f"/api/v1/teams/{alice.team_slug}/audit"
    first = (await client.get(url, params={"limit": 3}, headers=alice.headers)).json()
    second = (
        await client.get(
            url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=alice.headers
        )
    ).json()
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert len(ids) == len(set(ids)) == 6  # 5 env.set + project.create
    assert second["items"][-1]["action"] == "project.create"
    bad = await client.get(url, params={"cursor": "%%%"}, headers=alice.headers)
    assert bad.status_code == 422


async def test_idempotency_key_deploys_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await project_of(client, alice)
    url = f"/api/v1/projects/{project}/deployments"
    headers = {**alice.headers, "Idempotency-Key": "ci-run-42"}
    first = await client.post(url, json={"branch": "main"}, headers=headers)
    again = await client.post(url, json={"branch": "main"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    async with session_scope(platform.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Deployment)) == 1
    other = await client.post(url, json={"branch": "dev"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_mismatch"
    too_long = await client.post(
        url, json={}, headers={**alice.headers, "Idempotency-Key": "x" * 300}
    )
    assert too_long.status_code == 422
    # another token's identical key is its own slot
    second_token = await token_for(platform, alice.user_id)
    fresh = await client.post(
        url,
        json={"branch": "main"},
        headers={"Authorization": f"Bearer {second_token}", "Idempotency-Key": "ci-run-42"},
    )
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]


async def test_concurrent_retries_run_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await project_of(client, alice)
    headers = {**alice.headers, "Idempotency-Key": "parallel"}
    responses = await asyncio.gather(
        *[
            client.post(f"/api/v1/projects/{project}/deployments", json={}, headers=headers)
            for _ in range(5)
        ]
    )
    assert {r.status_code for r in responses} <= {201, 409}
    async with session_scope(platform.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Deployment)) == 1


async def test_rate_limit_per_token(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account
) -> None:
    platform.settings.api_rate_limit = 5
    statuses = [
        (await client.get("/api/v1/teams", headers=alice.headers)).status_code for _ in range(7)
    ]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]
    limited = await client.get("/api/v1/teams", headers=alice.headers)
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"
    assert (await client.get("/api/v1/teams", headers=bob.headers)).status_code == 200


async def test_pause_and_resume_a_project(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    project = await project_of(client, alice)
    paused = await client.post(f"/api/v1/projects/{project}/pause", headers=alice.headers)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    refused = await client.post(
        f"/api/v1/projects/{project}/deployments", json={}, headers=alice.headers
    )
    assert refused.status_code == 409 and "paused" in refused.json()["error"]["message"]
    assert (
        await client.post(f"/api/v1/projects/{project}/resume", headers=bob.headers)
    ).status_code == 404
    resumed = await client.post(f"/api/v1/projects/{project}/resume", headers=alice.headers)
    assert resumed.json()["status"] == "active"
    assert (
        await client.post(f"/api/v1/projects/{project}/deployments", json={}, headers=alice.headers)
    ).status_code == 201


async def test_account_through_the_api(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account
) -> None:
    renamed = await client.patch("/api/v1/user", json={"name": "Alice A."}, headers=alice.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Alice A."
    for body in ({}, {"name": ""}, {"name": "x" * 300}, {"name": "ok", "is_admin": True}):
        assert (
            await client.patch("/api/v1/user", json=body, headers=alice.headers)
        ).status_code == 422
    change = await client.post(
        "/api/v1/user/email", json={"email": "alice@new.example.com"}, headers=alice.headers
    )
    assert change.status_code == 202 and change.json()["to"] == "alice@new.example.com"
    taken = await client.post(
        "/api/v1/user/email", json={"email": "bob@example.com"}, headers=alice.headers
    )
    assert taken.status_code in (409, 422)
    # an owner whose team has other members cannot leave it ownerless
    await add_member(platform, bob, alice.team_id, Role.member)
    blocked = await client.delete("/api/v1/user", headers=alice.headers)
    assert blocked.status_code == 409 and "owner" in blocked.json()["error"]["message"]
    read_only = await token_for(platform, bob.user_id, scopes=["read"])
    assert (
        await client.delete("/api/v1/user", headers={"Authorization": f"Bearer {read_only}"})
    ).status_code == 403
    gone = await client.delete("/api/v1/user", headers=bob.headers)
    assert gone.status_code == 202 and gone.json()["status"] == "deleting"
    assert (await client.get("/api/v1/user", headers=bob.headers)).status_code == 401
