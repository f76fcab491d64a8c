"""Previews don't get production secrets unless asked (SECURITY.md, promise 17): a project-wide
secret reaches deployments of an environment, but a preview (a pull request, from a branch or a
fork, or a branch that matches no environment) gets it only when it is marked `previews`.
Deployments are made as every trigger makes them and run up to the runtime, whose spec is
recorded instead of started; the env it gets is compared key by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from devpush.db import session_scope
from devpush.deployments import actions, flows
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment
from devpush.github import webhooks
from devpush.github.models import GithubInstallation
from devpush.platform import Platform
from devpush.projects.models import EnvVar, Project
from devpush.runtime.base import RuntimeSpec
from tests.factories.auth import Account, make_account, token_for
from tests.integration.github.helpers import (
    INSTALLATION_ID,
    REPO,
    REPO_ID,
    GithubDouble,
    deliver,
    git,
    payload,
)
from tests.security.world import CSRF

PLAIN, SHARED, PROD, STAGED = "PLAIN", "SHARED_SECRET", "PROD_SECRET", "STAGING_SECRET"
EVERY = {PLAIN, SHARED, PROD, STAGED}
ON_AN_ENVIRONMENT = {PLAIN, SHARED, PROD}  # production, or staging before its own
IN_A_PREVIEW = {PLAIN, SHARED}


@pytest.fixture
async def alice(platform: Platform) -> Account:
    return await make_account(platform, "alice@example.com", admin=True)  # file:// repos


@pytest.fixture
async def bob(platform: Platform) -> Account:
    return await make_account(platform, "bob@example.com")


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[RuntimeSpec]:
    """What the worker hands the runtime, recorded instead of started."""
    specs: list[RuntimeSpec] = []

    async def record(p: Platform, deployment: Deployment, spec: RuntimeSpec) -> None:
        specs.append(spec)

    monkeypatch.setattr(flows, "_launch", record)
    return specs


def repository(tmp_path: Path) -> Path:
    """main, two staging branches, an unmatched one, and two whose devpush.toml decides: one
    places itself in staging, the other takes itself out of it (it becomes a preview)."""
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "app.py").write_text("print('hi')\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "app")
    for branch in ("main", "release/1", "feature-x"):
        git(work, "push", "-q", str(bare), f"HEAD:refs/heads/{branch}")
    for branch, toml in [
        ("toml-x", '[environments]\nstaging = "toml-*"\n'),
        ("release/2", '[environments]\nqa = "nothing-*"\n'),
    ]:
        (work / "devpush.toml").write_text(toml)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", f"devpush.toml for {branch}")
        git(work, "push", "-q", str(bare), f"HEAD:refs/heads/{branch}")
        git(work, "reset", "-q", "--hard", "HEAD~1")
    return bare


async def project_with_every_kind(
    client: httpx.AsyncClient, account: Account, repo_url: str | None = None
) -> str:
    body: dict[str, Any] = {
        "name": "shop",
        "start_command": "python3 app.py",
        "environments": [{"name": "staging", "branch_pattern": "release/*"}],
    }
    if repo_url:
        body["repo_url"] = repo_url
    created = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects", json=body, headers=account.headers
    )
    assert created.status_code == 201, created.text
    project_id = str(created.json()["id"])
    for key, var, params in [
        (PLAIN, {"value": "plain-v"}, None),
        (SHARED, {"value": "shared-v", "secret": True, "previews": True}, None),
        (PROD, {"value": "prod-v", "secret": True}, None),
        (STAGED, {"value": "staged-v", "secret": True}, {"environment": "staging"}),
    ]:
        put = await client.put(
            f"/api/v1/projects/{project_id}/env/{key}",
            json=var,
            params=params,
            headers=account.headers,
        )
        assert put.status_code == 200, put.text
        assert put.json()["previews"] is (key == SHARED)
        assert "-v" not in put.text  # write-only
    return project_id


async def snapshots(platform: Platform, project_id: str) -> dict[tuple[str, int | None], set[str]]:
    """{(branch, pr): the keys of the deployment's env snapshot}."""
    async with session_scope(platform.sessions) as session:
        rows = await session.scalars(select(Deployment).where(Deployment.project_id == project_id))
        return {(d.branch, d.pr_number): set(deployments.env_snapshot(d)) for d in rows}


async def test_each_deployment_gets_exactly_its_variables(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    tmp_path: Path,
    launched: list[RuntimeSpec],
) -> None:
    project_id = await project_with_every_kind(client, alice, f"file://{repository(tmp_path)}")
    for branch in ("main", "release/1", "feature-x", "toml-x", "release/2"):
        made = await client.post(
            f"/api/v1/projects/{project_id}/deployments",
            json={"branch": branch},
            headers=alice.headers,
        )
        assert made.status_code == 201, made.text
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        # a pull request whose head branch matches staging's pattern: still a preview
        await actions.create_and_enqueue(
            session=session,
            p=platform,
            principal=None,
            pr_number=7,
            project=project,
            branch="release/1",
            commit_sha=None,
            trigger="github_pr",
            ip=None,
        )
    # as made (before devpush.toml is read)
    assert await snapshots(platform, project_id) == {
        ("main", None): ON_AN_ENVIRONMENT,
        ("release/1", None): EVERY,
        ("feature-x", None): IN_A_PREVIEW,
        ("toml-x", None): IN_A_PREVIEW,
        ("release/2", None): EVERY,
        ("release/1", 7): IN_A_PREVIEW,
    }

    for job in await platform.redis.queued_jobs():
        if job.function == "start_deployment":
            await flows.start_deployment(platform, job.args[0])
    async with session_scope(platform.sessions) as session:
        rows = await session.scalars(select(Deployment).where(Deployment.project_id == project_id))
        which = {d.id: (d.branch, d.pr_number) for d in rows}
    # what each runtime was handed: devpush.toml moved toml-x into staging, release/2 out
    expected = {
        ("main", None): ON_AN_ENVIRONMENT,
        ("release/1", None): EVERY,
        ("feature-x", None): IN_A_PREVIEW,
        ("toml-x", None): EVERY,
        ("release/2", None): IN_A_PREVIEW,
        ("release/1", 7): IN_A_PREVIEW,
    }
    handed = {which[s.deployment_id]: EVERY & set(s.env) for s in launched}
    assert handed == expected
    assert await snapshots(platform, project_id) == expected
    values = {s.env.get(PROD) for s in launched} | {s.env.get(SHARED) for s in launched}
    assert values == {"prod-v", "shared-v", None}


async def test_a_fork_pull_request_from_the_webhook_gets_no_unmarked_secret(
    client: httpx.AsyncClient, platform: Platform, alice: Account, github: GithubDouble
) -> None:
    project_id = await project_with_every_kind(client, alice)
    async with session_scope(platform.sessions) as session:
        session.add(
            GithubInstallation(
                id=INSTALLATION_ID,
                account_login="Codertocat",
                account_type="User",
                team_id=alice.team_id,
            )
        )
        project = await session.get(Project, project_id)
        assert project is not None
        project.github_installation_id, project.github_repo_id = INSTALLATION_ID, REPO_ID
        project.github_repo_full_name = REPO
        project.allowed_forks = ["forker"]
    opened = payload("pull_request.opened.payload.json")
    opened["pull_request"]["head"].update(
        sha="c" * 40, repo={"id": 999999, "full_name": "Forker/Hello-World", "name": "Hello-World"}
    )
    assert (await deliver(client, "pull_request", opened, delivery="fork-1")).status_code == 202
    await webhooks.process(platform, "fork-1")
    assert await snapshots(platform, project_id) == {("changes", 2): IN_A_PREVIEW}


async def test_previews_flag_failures_change_nothing(
    client: httpx.AsyncClient, app: FastAPI, platform: Platform, alice: Account, bob: Account
) -> None:
    project_id = await project_with_every_kind(client, alice)
    url = f"/api/v1/projects/{project_id}/env"

    async def stored() -> list[tuple[str, str | None, bool, bool, str]]:
        async with session_scope(platform.sessions) as session:
            rows = await session.scalars(select(EnvVar).order_by(EnvVar.key))
            return [(v.key, v.environment_id, v.secret, v.previews, v.value_enc) for v in rows]

    before = await stored()
    listed = (await client.get(url, headers=alice.headers)).json()
    for body, params in [
        ({"value": "x", "secret": True, "previews": "yes"}, None),
        ({"value": "x", "secret": True, "previews": 1}, None),
        ({"value": "x", "secret": True, "previews": "true"}, None),
        ({"value": "x", "secret": True, "previews": None}, None),
        ({"value": "x", "secret": True, "previews": [True]}, None),
        ({"value": "x", "secret": True, "previews": True}, {"environment": "staging"}),
        ({"value": "x", "previews": True}, {"environment": "staging"}),
    ]:
        for key in (PROD, STAGED):
            answer = await client.put(
                f"{url}/{key}", json=body, params=params, headers=alice.headers
            )
            assert answer.status_code == 422, (body, params, answer.text)
    assert await stored() == before
    assert (await client.get(url, headers=alice.headers)).json() == listed

    marked = {"value": "x", "secret": True, "previews": True}
    assert (await client.put(f"{url}/{PROD}", json=marked, headers=bob.headers)).status_code == 404
    assert (await client.get(url, headers=bob.headers)).status_code == 404
    read_only = await token_for(platform, alice.user_id, scopes=["read"])
    as_reader = {"Authorization": f"Bearer {read_only}"}
    assert (await client.put(f"{url}/{PROD}", json=marked, headers=as_reader)).status_code == 403
    shown = await client.get(url, headers=as_reader)
    assert shown.status_code == 200 and "-v" not in shown.text
    assert {(v["key"], v["environment"]): v["previews"] for v in shown.json()} == {
        (PLAIN, None): False,
        (PROD, None): False,
        (SHARED, None): True,
        (STAGED, "staging"): False,
    }
    assert await stored() == before

    # a plain variable reaches previews anyway: the flag is stored false for it
    plain = await client.put(
        f"{url}/{PLAIN}", json={"value": "p", "previews": True}, headers=alice.headers
    )
    assert plain.status_code == 200 and plain.json()["previews"] is False


async def test_the_settings_page_marks_a_secret_for_previews(
    app: FastAPI, platform: Platform, client: httpx.AsyncClient, alice: Account
) -> None:
    from devpush.auth import service as auth

    project_id = await project_with_every_kind(client, alice)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as browser:
        async with session_scope(platform.sessions) as session:
            link = await auth.create_sign_in_link(session=session, user_id=alice.user_id)
        assert (await browser.get(f"/auth/link/{link}")).status_code == 303
        page = await browser.get(f"/projects/{project_id}/settings")
        assert 'name="previews"' in page.text and "Also for previews" in page.text
        assert page.text.count("data-previews") == 1  # SHARED_SECRET only
        token = CSRF.search(page.text)
        assert token
        htmx = {"HX-Request": "true", "X-CSRF-Token": token[1]}
        form = {"key": PROD, "value": "prod-2", "secret": "on", "previews": "on"}
        saved = await browser.post(f"/projects/{project_id}/env", data=form, headers=htmx)
        assert saved.status_code == 200 and "prod-2" not in saved.text
        assert saved.text.count("data-previews") == 2
        refused = await browser.post(
            f"/projects/{project_id}/env",
            data={**form, "key": STAGED, "environment": "staging"},
            headers=htmx,
        )
        assert "previews never get a variable scoped to an environment" in refused.text
    async with session_scope(platform.sessions) as session:
        rows = {v.key: v.previews for v in await session.scalars(select(EnvVar))}
    assert rows == {PLAIN: False, SHARED: True, PROD: True, STAGED: False}


async def test_a_branch_cannot_name_itself_production_in_devpush_toml(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    tmp_path: Path,
    launched: list[RuntimeSpec],
) -> None:
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "app.py").write_text("print('hi')\n")
    (work / "devpush.toml").write_text('[environments]\nproduction = "sneaky*"\n')
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "claims production")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/sneaky")
    project_id = await project_with_every_kind(client, alice, f"file://{bare}")
    made = await client.post(
        f"/api/v1/projects/{project_id}/deployments",
        json={"branch": "sneaky"},
        headers=alice.headers,
    )
    assert made.status_code == 201, made.text
    for job in await platform.redis.queued_jobs():
        if job.function == "start_deployment":
            await flows.start_deployment(platform, job.args[0])
    result = (
        await client.get(f"/api/v1/deployments/{made.json()['id']}", headers=alice.headers)
    ).json()
    assert result["conclusion"] == "failed", result
    assert "production environment" in result["error"]
    assert launched == []  # never started, so never handed production's secrets
