"""Talking to GitHub, checked against the respx double: the App JWT and installation tokens
(cached encrypted, refreshed before expiry), commit statuses, the one PR comment that each push
edits, the repository listing and connecting a project."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from devpush.auth.service import create_sign_in_link
from devpush.db import session_scope, utcnow
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Deployment, Status
from devpush.errors import ConfigError
from devpush.github import reporting
from devpush.github.models import GithubInstallation, GithubPullRequest
from devpush.github.service import installation_token
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.sources import branches
from tests.conftest import deliver_events
from tests.factories.auth import Account
from tests.integration.github.helpers import (
    APP_ID,
    INSTALLATION_ID,
    REPO,
    Connected,
    GithubDouble,
    project_row,
    repo_json,
)


async def new_deployment(
    platform: Platform,
    connected: Connected,
    branch: str,
    sha: str,
    *,
    trigger: str = "github_push",
    pr_number: int | None = None,
) -> Deployment:
    async with platform.sessions() as session:
        project = await session.get(Project, connected.project_id)
        assert project is not None
        deployment = await branches.deploy_push(
            session=session,
            p=platform,
            project=project,
            branch=branch,
            commit_sha=sha,
            trigger=trigger,
            pr_number=pr_number,
        )
        assert deployment is not None
        return deployment


async def move(platform: Platform, deployment_id: str, status: Status, **fields: object) -> None:
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if status == Status.completed:
            conclusion = Conclusion(str(fields["conclusion"]))
            deployments.conclude(row, conclusion, str(fields.get("error") or "") or None)
        else:
            row.status = status
            if status == Status.prepare:
                row.prepare_started_at = utcnow()  # the worker took it: `deployment.building`


async def report_jobs(platform: Platform) -> list[str]:
    jobs = await platform.redis.queued_jobs()
    return sorted(j.job_id or "" for j in jobs if j.function == "github_report")


# ---- tokens --------------------------------------------------------------------------------
async def test_installation_tokens_use_a_valid_jwt_and_are_cached_encrypted(
    platform: Platform, connected: Connected, github: GithubDouble
) -> None:
    token = await installation_token(p=platform, installation_id=INSTALLATION_ID)
    assert github.tokens == [token]
    [claims] = github.jwt_claims
    assert claims["iss"] == APP_ID and claims["exp"] - claims["iat"] <= 600
    assert await installation_token(p=platform, installation_id=INSTALLATION_ID) == token
    assert len(github.tokens) == 1  # cached
    async with session_scope(platform.sessions) as session:
        row = await session.get(GithubInstallation, INSTALLATION_ID)
        assert row is not None and row.token_enc and token not in row.token_enc
        row.token_expires_at = utcnow() + timedelta(minutes=2)  # about to expire
    fresh = await installation_token(p=platform, installation_id=INSTALLATION_ID)
    assert fresh != token and len(github.jwt_claims) == 2


async def test_a_wrong_app_key_is_a_config_error(
    platform: Platform, connected: Connected, github: GithubDouble
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    platform.settings = platform.settings.model_copy(
        update={
            "github_app_private_key": other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ).decode()
        }
    )
    with pytest.raises(ConfigError, match="GitHub rejected the App's JWT"):
        await installation_token(p=platform, installation_id=INSTALLATION_ID)
    assert github.tokens == []


# ---- commit statuses and PR comments ---------------------------------------------------------
async def test_commit_status_goes_pending_then_success_or_failure(
    platform: Platform, connected: Connected, github: GithubDouble
) -> None:
    sha = connected.commit("main", "A")
    deployment = await new_deployment(platform, connected, "main", sha)
    await move(platform, deployment.id, Status.prepare)
    await deliver_events(platform)  # its subscriber of the domain events queues the report
    assert await report_jobs(platform) == [f"github-report:{deployment.id}:prepare"]
    await reporting.report(platform, deployment.id)
    url = platform.settings.deploy_url(f"{connected.slug}-id-{deployment.id[:7]}")
    [pending] = github.statuses
    assert (pending["state"], pending["sha"], pending["repo"]) == ("pending", sha, REPO)
    assert pending["target_url"] == url and pending["context"] == f"devpush/{connected.slug}"

    await move(platform, deployment.id, Status.completed, conclusion=Conclusion.succeeded)
    await reporting.report(platform, deployment.id)
    assert github.statuses[-1]["state"] == "success"
    assert github.statuses[-1]["target_url"] == url

    sha2 = connected.commit("main", "B")
    failing = await new_deployment(platform, connected, "main", sha2)
    await move(
        platform, failing.id, Status.completed, conclusion=Conclusion.failed, error="Build failed"
    )
    await reporting.report(platform, failing.id)
    assert github.statuses[-1]["state"] == "failure"
    assert "Build failed" in github.statuses[-1]["description"]
    assert github.comment_posts == 0  # pushes get no comment


async def test_only_github_deployments_are_reported(
    platform: Platform, connected: Connected, github: GithubDouble
) -> None:
    sha = connected.commit("main", "A")
    deployment = await new_deployment(platform, connected, "main", sha, trigger="api")
    await move(platform, deployment.id, Status.prepare)
    await deliver_events(platform)
    assert await report_jobs(platform) == []


async def test_pr_comment_is_created_once_then_edited(
    platform: Platform, connected: Connected, github: GithubDouble
) -> None:
    first_sha = connected.commit("changes", "one")
    first = await new_deployment(
        platform, connected, "changes", first_sha, trigger="github_pr", pr_number=2
    )
    await move(platform, first.id, Status.prepare)
    await reporting.report(platform, first.id)
    assert github.comment_posts == 1
    [(comment_id, comment)] = github.comments.items()
    assert comment["issue"] == 2
    assert platform.settings.deploy_url(f"{connected.slug}-pr-2") in comment["body"]
    await move(platform, first.id, Status.completed, conclusion=Conclusion.succeeded)
    await reporting.report(platform, first.id)
    assert (github.comment_posts, github.comment_patches) == (1, 1)
    assert "Deployment is live" in github.comments[comment_id]["body"]

    second_sha = connected.commit("changes", "two")  # the next push to the PR
    second = await new_deployment(
        platform, connected, "changes", second_sha, trigger="github_pr", pr_number=2
    )
    await move(platform, second.id, Status.prepare)
    await reporting.report(platform, second.id)
    assert (github.comment_posts, github.comment_patches) == (1, 2)
    assert second_sha[:7] in github.comments[comment_id]["body"]
    await reporting.report(platform, first.id)  # a late report of the older push
    assert (github.comment_posts, github.comment_patches) == (1, 2)
    assert second_sha[:7] in github.comments[comment_id]["body"]
    async with session_scope(platform.sessions) as session:
        row = await session.scalar(select(GithubPullRequest))
        assert row is not None and row.comment_id == comment_id

    github.comments.clear()  # someone deleted our comment: post a new one
    await reporting.report(platform, second.id)
    assert github.comment_posts == 2


# ---- repositories and connecting ---------------------------------------------------------------
async def test_repository_listing_for_the_new_project_page(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    bob: Account,
    connected: Connected,
    github: GithubDouble,
) -> None:
    github.repos = [repo_json(1000 + i, f"Codertocat/repo-{i:03}") for i in range(150)]
    response = await client.get(
        "/api/v1/github/repositories", params={"team": alice.team_slug}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    names = [r["full_name"] for r in response.json()]
    assert len(names) == 150 and names[0] == "Codertocat/repo-000"
    assert response.json()[0]["installation_id"] == INSTALLATION_ID
    everything = await client.get("/api/v1/github/repositories", headers=alice.headers)
    assert len(everything.json()) == 150
    assert (await client.get("/api/v1/github/repositories", headers=bob.headers)).json() == []
    other = await client.get(
        "/api/v1/github/repositories", params={"team": alice.team_slug}, headers=bob.headers
    )
    assert other.status_code == 404
    assert (await client.get("/api/v1/github/repositories")).status_code == 401


async def test_connect_a_project_to_a_repository(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    connected: Connected,
    github: GithubDouble,
) -> None:
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects", json={"name": "fresh"}, headers=alice.headers
    )
    project_id = created.json()["id"]
    source = await client.get(f"/api/v1/projects/{project_id}/git", headers=alice.headers)
    assert source.json()["source"] == "push"
    assert source.json()["push_url"].endswith(f"/git/{alice.team_slug}/fresh.git")
    url = f"/api/v1/projects/{project_id}/github"
    missing = await client.put(url, json={"repository": "Codertocat/Nope"}, headers=alice.headers)
    assert missing.status_code == 404
    hostile = await client.put(url, json={"repository": "a/$(id)"}, headers=alice.headers)
    assert hostile.status_code == 422
    ok = await client.put(url, json={"repository": REPO}, headers=alice.headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["source"] == "github" and ok.json()["github_repository"] == REPO
    project = await project_row(platform, project_id)
    assert (project.github_installation_id, project.github_repo_full_name) == (
        INSTALLATION_ID,
        REPO,
    )
    gone = await client.delete(url, headers=alice.headers)
    assert gone.json()["source"] == "push"


async def test_install_link_and_setup_callback(
    client: httpx.AsyncClient, platform: Platform, alice: Account, github: GithubDouble
) -> None:
    response = await client.get(
        "/api/v1/github/install-url", params={"team": alice.team_slug}, headers=alice.headers
    )
    assert response.status_code == 200
    url = httpx.URL(response.json()["url"])
    assert url.path.endswith("/apps/devpush-test/installations/new")
    setup = {"installation_id": 77, "state": url.params["state"], "setup_action": "install"}
    anonymous = await client.get("/github/setup", params=setup, follow_redirects=False)
    assert anonymous.status_code == 403  # no session: not the user who started it
    forged = await client.get("/github/setup", params={**setup, "state": "x.y.z"})
    assert forged.status_code == 400
    async with session_scope(platform.sessions) as session:
        assert await session.get(GithubInstallation, 77) is None
        link = await create_sign_in_link(session=session, user_id=alice.user_id)
    signed_in = await client.get(f"/auth/link/{link}", follow_redirects=False)
    assert signed_in.status_code == 303
    github.installed_at = utcnow() - timedelta(hours=2)  # someone else's, long installed
    old = await client.get("/github/setup", params=setup, follow_redirects=False)
    assert old.status_code == 409 and "already linked, or too old" in old.text
    github.installed_at = utcnow()
    async with session_scope(platform.sessions) as session:
        assert await session.get(GithubInstallation, 77) is None  # nothing changed
    linked = await client.get("/github/setup", params=setup, follow_redirects=False)
    assert linked.status_code == 303, linked.text
    async with session_scope(platform.sessions) as session:
        row = await session.get(GithubInstallation, 77)
        assert row is not None and row.team_id == alice.team_id
        assert row.account_login == "Codertocat"
    assert len(github.jwt_claims) == 2  # the installation was looked up as the App
