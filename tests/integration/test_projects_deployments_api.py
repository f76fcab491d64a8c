"""Projects and deployments through the API: validation, authorization, snapshots, and the
worker's failure paths (run with a real arq worker in burst mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from sqlalchemy import func, select

from devpush.db import session_scope
from devpush.deployments.models import Deployment
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.teams.models import Role
from devpush.workers.jobs import worker_settings
from tests.factories.auth import Account, add_member, make_account, promote, token_for

# Nothing answers on loopback port 9 (discard): a fetch fails at once, without DNS.
VALID = {
    "name": "web",
    "repo_url": "http://127.0.0.1:9/acme/web.git",
    "start_command": "python3 app.py",
}


async def create_project(client: httpx.AsyncClient, account: Account, **body: Any) -> Any:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={**VALID, **body},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def count(platform: Platform, model: type) -> int:
    async with session_scope(platform.sessions) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_create_project_fills_defaults(client: httpx.AsyncClient, alice: Account) -> None:
    project = await create_project(
        client,
        alice,
        env_vars={"SECRET_KEY": "s3cret"},
        environments=[{"name": "staging", "branch_pattern": "dev*"}],
    )
    assert project["slug"] == "web" and project["production_branch"] == "main"
    assert project["env_var_keys"] == ["SECRET_KEY"]
    assert "s3cret" not in str(project)
    envs = {e["name"]: e for e in project["environments"]}
    assert envs["production"]["branch_pattern"] == "main"
    assert envs["staging"]["url"].startswith("http://web-env-staging.localhost")


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "../etc"},
        {"name": "a;rm -rf /"},
        {"name": 7},
        {"repo_url": "ftp://example.com/x"},
        {"repo_url": "file:///x\n--upload-pack=evil"},
        {"repo_url": "-oProxyCommand=evil"},
        {"env_vars": {"1BAD": "x"}},
        {"env_vars": {"OK": "a\x00b"}},
        {"env_vars": {"A-B": "x"}},
        {"root_directory": "../.."},
        {"health_path": "health"},
        {"port": 0},
        {"port": "x"},
        {"memory_mb": 1},
        {"production_branch": "main branch"},
        {"production_branch": "--upload-pack=x"},
        {"environments": [{"name": "production", "branch_pattern": "x"}]},
        {"environments": [{"name": "Bad Name", "branch_pattern": "x"}]},
        {"start_command": "x\x00y"},
        {"runtime": "kubernetes"},
        {"unknown": 1},
    ],
)
async def test_bad_project_input_is_422_and_changes_nothing(
    client: httpx.AsyncClient, platform: Platform, alice: Account, body: dict[str, Any]
) -> None:
    response = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects", json={**VALID, **body}, headers=alice.headers
    )
    assert response.status_code == 422, (body, response.text)
    assert response.json()["error"]["message"]
    assert await count(platform, Project) == 0


async def test_duplicate_name_is_409(client: httpx.AsyncClient, alice: Account) -> None:
    await create_project(client, alice)
    again = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects", json=VALID, headers=alice.headers
    )
    assert again.status_code == 409 and "already has a project" in again.json()["error"]["message"]


async def test_other_teams_projects_and_deployments_are_404(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account
) -> None:
    project = await create_project(client, alice)
    deployment = (
        await client.post(
            f"/api/v1/projects/{project['id']}/deployments", json={}, headers=alice.headers
        )
    ).json()
    for method, path, body in [
        ("GET", f"/api/v1/projects/{project['id']}", None),
        ("PATCH", f"/api/v1/projects/{project['id']}", {"port": 9000}),
        ("DELETE", f"/api/v1/projects/{project['id']}", None),
        ("GET", f"/api/v1/projects/{project['id']}/deployments", None),
        ("POST", f"/api/v1/projects/{project['id']}/deployments", {}),
        ("GET", f"/api/v1/deployments/{deployment['id']}", None),
        ("POST", f"/api/v1/deployments/{deployment['id']}/cancel", None),
        ("POST", f"/api/v1/deployments/{deployment['id']}/rollback", None),
        ("POST", f"/api/v1/deployments/{deployment['id']}/promote", None),
        ("POST", f"/api/v1/deployments/{deployment['id']}/redeploy", None),
        ("POST", f"/api/v1/teams/{alice.team_slug}/projects", VALID),
    ]:
        response = await client.request(method, path, json=body, headers=bob.headers)
        assert response.status_code == 404, (method, path, response.text)
    assert await count(platform, Deployment) == 1
    unchanged = await client.get(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert unchanged.json()["config"].get("port") is None


async def test_roles_and_scopes(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await create_project(client, alice)
    carol = await make_account(platform, "carol@example.com")
    await add_member(platform, carol, alice.team_id, Role.member)
    # a member deploys and reads, but cannot change settings
    deploy = await client.post(
        f"/api/v1/projects/{project['id']}/deployments", json={}, headers=carol.headers
    )
    assert deploy.status_code == 201
    patch = await client.patch(
        f"/api/v1/projects/{project['id']}", json={"port": 1234}, headers=carol.headers
    )
    assert patch.status_code == 403 and "role" in patch.json()["error"]["message"]
    # a read-only token cannot deploy
    read_only = await token_for(platform, alice.user_id, scopes=["read"])
    refused = await client.post(
        f"/api/v1/projects/{project['id']}/deployments",
        json={},
        headers={"Authorization": f"Bearer {read_only}"},
    )
    assert refused.status_code == 403 and "deploy" in refused.json()["error"]["message"]
    # a token limited to another team sees nothing of this one
    other = await client.post("/api/v1/teams", json={"name": "Side"}, headers=alice.headers)
    limited = await token_for(platform, alice.user_id, team_id=other.json()["id"])
    hidden = await client.get(
        f"/api/v1/projects/{project['id']}", headers={"Authorization": f"Bearer {limited}"}
    )
    assert hidden.status_code == 404


async def test_deployment_snapshots_config_and_supersedes(
    client: httpx.AsyncClient, alice: Account
) -> None:
    project = await create_project(client, alice, env_vars={"A": "1"})
    url = f"/api/v1/projects/{project['id']}/deployments"
    first = (await client.post(url, json={"branch": "main"}, headers=alice.headers)).json()
    assert first["status"] == "prepare" and first["config"]["start_command"] == "python3 app.py"
    await client.patch(
        f"/api/v1/projects/{project['id']}",
        json={"start_command": "python3 other.py", "port": 9000},
        headers=alice.headers,
    )
    snapshot = (
        await client.get(f"/api/v1/deployments/{first['id']}", headers=alice.headers)
    ).json()
    assert snapshot["config"]["start_command"] == "python3 app.py"
    second = (await client.post(url, json={"branch": "main"}, headers=alice.headers)).json()
    assert second["config"]["port"] == 9000
    first_now = (
        await client.get(f"/api/v1/deployments/{first['id']}", headers=alice.headers)
    ).json()
    assert first_now["conclusion"] == "skipped" and second["id"][:7] in first_now["error"]
    # paging and filters
    page = (await client.get(url, params={"limit": 1}, headers=alice.headers)).json()
    assert [d["id"] for d in page["items"]] == [second["id"]]
    rest = (
        await client.get(
            url, params={"limit": 1, "cursor": page["next_cursor"]}, headers=alice.headers
        )
    ).json()
    assert [d["id"] for d in rest["items"]] == [first["id"]] and rest["next_cursor"] is None
    skipped = (await client.get(url, params={"status": "skipped"}, headers=alice.headers)).json()
    assert [d["id"] for d in skipped["items"]] == [first["id"]]
    for params in ({"cursor": "garbage"}, {"status": "nope"}, {"limit": 0}, {"limit": 1000}):
        bad = await client.get(url, params=params, headers=alice.headers)
        assert bad.status_code == 422, params


async def test_actions_on_wrong_states_are_409(client: httpx.AsyncClient, alice: Account) -> None:
    project = await create_project(client, alice)
    url = f"/api/v1/projects/{project['id']}/deployments"
    deployment = (await client.post(url, json={}, headers=alice.headers)).json()
    rollback = await client.post(
        f"/api/v1/deployments/{deployment['id']}/rollback", headers=alice.headers
    )
    assert rollback.status_code == 409
    promote = await client.post(
        f"/api/v1/deployments/{deployment['id']}/promote", headers=alice.headers
    )
    assert promote.status_code == 409 and "redeploy" in promote.json()["error"]["message"]
    cancel = await client.post(
        f"/api/v1/deployments/{deployment['id']}/cancel", headers=alice.headers
    )
    assert cancel.status_code == 200 and cancel.json()["conclusion"] == "canceled"
    again = await client.post(
        f"/api/v1/deployments/{deployment['id']}/cancel", headers=alice.headers
    )
    assert again.status_code == 409
    missing = await client.get("/api/v1/deployments/doesnotexist", headers=alice.headers)
    assert missing.status_code == 404


async def run_worker(platform: Platform) -> None:
    settings = worker_settings(platform.settings)
    worker = Worker(**{**settings, "burst": True, "handle_signals": False, "poll_delay": 0.01})
    try:
        await worker.main()
    finally:
        await worker.close()


async def test_unreachable_repository_fails_with_a_clear_error(
    client: httpx.AsyncClient, alice: Account, platform: Platform
) -> None:
    project = await create_project(client, alice)
    deployment = (
        await client.post(
            f"/api/v1/projects/{project['id']}/deployments", json={}, headers=alice.headers
        )
    ).json()
    await run_worker(platform)
    result = (
        await client.get(f"/api/v1/deployments/{deployment['id']}", headers=alice.headers)
    ).json()
    assert result["status"] == "completed" and result["conclusion"] == "failed"
    assert result["error"].startswith("git fetch failed: unable to access")
    assert "127.0.0.1 port 9" in result["error"]


async def test_jobs_are_idempotent(
    client: httpx.AsyncClient, alice: Account, platform: Platform, tmp_path: Path
) -> None:
    from devpush.deployments import finalize, flows

    project = await create_project(client, alice)
    deployment = (
        await client.post(
            f"/api/v1/projects/{project['id']}/deployments", json={}, headers=alice.headers
        )
    ).json()
    await flows.fail_deployment(platform, deployment["id"], "first")
    await flows.fail_deployment(platform, deployment["id"], "second")
    await flows.start_deployment(platform, deployment["id"])
    await finalize.finalize_deployment(platform, deployment["id"])
    result = (
        await client.get(f"/api/v1/deployments/{deployment['id']}", headers=alice.headers)
    ).json()
    assert result["conclusion"] == "failed" and result["error"] == "first"


async def test_a_failure_met_twice_is_logged_and_recorded_once(
    client: httpx.AsyncClient, alice: Account, platform: Platform
) -> None:
    """The monitor and the worker (or a job run twice) may both fail a deployment while the
    first teardown is still under way: one reason, one log line."""
    from devpush.deployments import flows
    from devpush.deployments.models import Status

    project = await create_project(client, alice)
    deployment = (
        await client.post(
            f"/api/v1/projects/{project['id']}/deployments", json={}, headers=alice.headers
        )
    ).json()
    async with session_scope(platform.sessions) as session:  # the first call, mid-teardown
        row = await session.get(Deployment, deployment["id"])
        assert row is not None
        row.status, row.error = Status.fail, "The app did not answer within 120s"
    await flows.system_log(platform, deployment["id"], "The app did not answer within 120s")
    await flows.fail_deployment(platform, deployment["id"], "The app did not answer within 120s")
    result = (
        await client.get(f"/api/v1/deployments/{deployment['id']}", headers=alice.headers)
    ).json()
    assert result["conclusion"] == "failed"
    logs = (
        await client.get(
            f"/api/v1/projects/{project['id']}/logs",
            params={"deployment": deployment["id"]},
            headers=alice.headers,
        )
    ).json()["items"]
    assert [line["message"] for line in logs].count("The app did not answer within 120s") == 1


async def test_the_plan_of_a_branch_without_deploying(
    client: httpx.AsyncClient, alice: Account, platform: Platform, tmp_path: Path
) -> None:
    import shutil
    import subprocess

    repo = tmp_path / "flask"
    shutil.copytree(Path(__file__).parents[1] / "apps" / "flask-gunicorn", repo)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "flask"]):
        subprocess.run(
            ["git", "-c", "user.name=T", "-c", "user.email=t@e", *args], cwd=repo, check=True
        )
    await promote(platform, alice.user_id)  # file:// repositories are for platform admins
    project = await create_project(
        client, alice, repo_url=f"file://{repo}", start_command=None, name="planned"
    )
    url = f"/api/v1/projects/{project['id']}/plan"
    answer = await client.get(url, headers=alice.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["branch"] == "main" and len(body["commit_sha"]) == 40
    assert body["lines"][0] == "Plan: flask (python)"
    assert body["plan"]["start"].startswith("gunicorn 'app:app'")
    before = await count(platform, Deployment)
    missing = await client.get(url, params={"branch": "nope"}, headers=alice.headers)
    assert missing.status_code == 502 and "git fetch failed" in missing.json()["error"]["message"]
    hostile = await client.get(url, params={"branch": "-u;rm"}, headers=alice.headers)
    assert hostile.status_code == 422
    (repo / "requirements.txt").unlink()
    (repo / "app.py").unlink()
    (repo / "README.md").write_text("nothing to run\n")
    subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@e", "commit", "-qam", "x"],
        cwd=repo,
        check=True,
    )
    nothing = await client.get(url, headers=alice.headers)
    assert nothing.status_code == 422 and "No app found" in nothing.json()["error"]["message"]
    assert await count(platform, Deployment) == before  # planning deploys nothing
    stranger = await make_account(platform, "plan-stranger@example.com")
    assert (await client.get(url, headers=stranger.headers)).status_code == 404


async def test_a_runtime_the_platform_is_not_set_up_for_is_refused(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    """The swarm runtime needs DEVPUSH_SWARM_HOST: asking for it elsewhere says so, and neither
    a new project nor a changed one takes it (its deployments would only fail)."""
    assert platform.settings.swarm_host is None
    refused = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={**VALID, "runtime": "swarm"},
        headers=alice.headers,
    )
    assert refused.status_code == 422, refused.text
    assert "DEVPUSH_SWARM_HOST" in refused.json()["error"]["message"]
    assert await count(platform, Project) == 0

    project = await create_project(client, alice)
    patched = await client.patch(
        f"/api/v1/projects/{project['id']}", json={"runtime": "swarm"}, headers=alice.headers
    )
    assert patched.status_code == 422, patched.text
    async with session_scope(platform.sessions) as session:
        row = await session.get(Project, project["id"])
        assert row is not None and "runtime" not in row.config
