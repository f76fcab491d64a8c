"""The GitHub webhook, fed the real octokit payloads signed with a test secret: signatures,
redeliveries, pushes, pull request previews, branch deletions, installation and repository
events, and hostile input. Jobs run in the test (their function is called directly)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from devpush import git as gitsource
from devpush.db import session_scope
from devpush.deployments import remote
from devpush.deployments import service as deployments
from devpush.deployments.models import Alias, AliasType, Conclusion, Deployment, Status
from devpush.github import webhooks
from devpush.github.models import GithubDelivery, GithubInstallation, GithubPullRequest
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.runtime.base import InstanceState, RuntimeHandle, RuntimeSpec
from tests.conftest import free_port
from tests.factories.auth import Account
from tests.integration.github.helpers import (
    INSTALLATION_ID,
    REPO_ID,
    Connected,
    GithubDouble,
    deliver,
    git,
    payload,
    project_row,
    sign,
)

MARKER = Path("/tmp/devpush-gh-pwned")


async def count(platform: Platform, model: Any, *where: Any) -> int:
    async with session_scope(platform.sessions) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def run_webhook_jobs(platform: Platform) -> list[str]:
    """Run every queued github_webhook job, as the worker would."""
    done = []
    for job in await platform.redis.queued_jobs():
        if job.function == "github_webhook":
            await webhooks.process(platform, job.args[0])
            done.append(job.args[0])
    return done


async def project_deployments(platform: Platform, project_id: str) -> list[Deployment]:
    async with session_scope(platform.sessions) as session:
        rows = await session.scalars(
            select(Deployment)
            .where(Deployment.project_id == project_id)
            .order_by(Deployment.created_at)
        )
        return list(rows)


def push_payload(branch: str, sha: str, **changes: Any) -> dict[str, Any]:
    return payload(
        "push.with-new-branch.payload.json", ref=f"refs/heads/{branch}", after=sha, **changes
    )


def pr_payload(name: str, sha: str, **head_changes: Any) -> dict[str, Any]:
    data = payload(name)
    data["pull_request"]["head"]["sha"] = sha
    data["pull_request"]["head"].update(head_changes)
    return data


@pytest.fixture
async def live(platform: Platform, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Make a deployment live as finalize would: a real process-runtime instance, the
    deployment concluded succeeded, its aliases pointed at it. Removes leftovers after."""
    runtime = platform.runtimes.get("process")
    handles: list[RuntimeHandle] = []

    async def make(deployment_id: str) -> RuntimeHandle:
        source = tmp_path / f"src-{deployment_id}"
        source.mkdir()
        spec = RuntimeSpec(
            deployment_id=deployment_id,
            project_id="p",
            source_dir=source,
            start_command="sleep 600",
            env={"PORT": "1"},
            port=free_port(),
        )
        handle = await runtime.start(await runtime.create(spec))
        handles.append(handle)
        async with session_scope(platform.sessions) as session:
            deployment = await deployments.get(
                session=session, deployment_id=deployment_id, lock=True
            )
            project = await session.get(Project, deployment.project_id)
            assert project is not None
            environment = (
                await session.get(Environment, deployment.environment_id)
                if deployment.environment_id
                else None
            )
            deployment.runtime_handle = handle.to_json()
            deployment.upstream = handle.upstream
            deployments.conclude(deployment, Conclusion.succeeded)
            await deployments.point_aliases(
                session=session,
                project_id=project.id,
                specs=deployments.alias_specs(project, deployment, environment),
                deployment_id=deployment.id,
            )
        assert (await runtime.status(handle)).state in (
            InstanceState.running,
            InstanceState.building,
        )
        return handle

    yield make
    for handle in handles:
        await runtime.remove(handle)


# ---- signatures and deliveries ------------------------------------------------------------
async def test_invalid_signature_changes_nothing(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    sha = connected.commit("main", "A")
    body = json.dumps(push_payload("main", sha)).encode()
    cases = {
        "missing": None,
        "wrong secret": sign(body, "not-the-secret"),
        "garbage": "sha256=zz",
        "sha1 style": "sha1=" + "0" * 40,
        "other body": sign(body + b" "),
    }
    for name, signature in cases.items():
        response = await deliver(client, "push", body, signature=signature)
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthorized", name
    assert await count(platform, GithubDelivery) == 0
    assert await count(platform, Deployment) == 0
    assert await platform.redis.queued_jobs() == []


async def test_redelivery_is_ignored(
    client: httpx.AsyncClient, platform: Platform, connected: Connected, github: GithubDouble
) -> None:
    sha = connected.commit("main", "A")
    data = push_payload("main", sha)
    first = await deliver(client, "push", data, delivery="d-1")
    assert (first.status_code, first.json()["status"]) == (202, "queued")
    again = await deliver(client, "push", data, delivery="d-1")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert await count(platform, GithubDelivery) == 1
    await run_webhook_jobs(platform)
    await webhooks.process(platform, "d-1")  # a job that runs twice deploys once
    assert len(await project_deployments(platform, connected.project_id)) == 1


async def test_webhook_answers_within_a_second(
    client: httpx.AsyncClient, connected: Connected
) -> None:
    sha = connected.commit("main", "A")
    started = time.monotonic()
    response = await deliver(client, "push", push_payload("main", sha))
    assert response.status_code == 202
    assert time.monotonic() - started < 1.0


async def test_ping_and_unknown_events(client: httpx.AsyncClient, platform: Platform) -> None:
    ping = await deliver(client, "ping", payload("ping.payload.json"))
    assert ping.status_code == 202
    await run_webhook_jobs(platform)
    async with session_scope(platform.sessions) as session:
        assert [d.status for d in await session.scalars(select(GithubDelivery))] == ["done"]
    other = await deliver(client, "issues", {"action": "opened"})
    assert (other.status_code, other.json()["status"]) == (202, "ignored")
    assert await count(platform, GithubDelivery) == 1


# ---- pushes -----------------------------------------------------------------------------------
async def test_push_deploys_the_branch_and_the_worker_fetches_with_a_token(
    client: httpx.AsyncClient,
    platform: Platform,
    connected: Connected,
    github: GithubDouble,
    tmp_path: Path,
) -> None:
    sha = connected.commit("main", "hello")
    response = await deliver(client, "push", push_payload("main", sha))
    assert response.status_code == 202
    await run_webhook_jobs(platform)
    [deployment] = await project_deployments(platform, connected.project_id)
    assert (deployment.trigger, deployment.branch, deployment.commit_sha) == (
        "github_push",
        "main",
        sha,
    )
    assert deployment.environment_id is not None  # production follows main
    queued = {(j.function, j.args[0]) for j in await platform.redis.queued_jobs()}
    assert ("start_deployment", deployment.id) in queued

    project = await project_row(platform, connected.project_id)
    source = await remote.for_deployment(platform, project, deployment)
    assert source.ref == "refs/heads/main"
    assert source.credentials is not None and source.credentials.username == "x-access-token"
    assert source.credentials.token in github.tokens
    assert source.credentials.token not in repr(source)
    commit = await gitsource.fetch(
        mirror=tmp_path / "mirror.git",
        url=source.url,
        branch=deployment.branch,
        commit_sha=deployment.commit_sha,
        ref=source.ref,
        credentials=source.credentials,
    )
    assert commit.sha == sha and commit.message == "body hello"


async def test_previews_follow_the_project_setting(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    sha = connected.commit("feature/x", "preview")
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, connected.project_id)
        assert project is not None
        project.preview_deployments = False
    await deliver(client, "push", push_payload("feature/x", sha))
    await run_webhook_jobs(platform)
    assert await project_deployments(platform, connected.project_id) == []
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, connected.project_id)
        assert project is not None
        project.preview_deployments = True
    await deliver(client, "push", push_payload("feature/x", sha))
    await run_webhook_jobs(platform)
    [preview] = await project_deployments(platform, connected.project_id)
    assert (preview.branch, preview.environment_id, preview.trigger) == (
        "feature/x",
        None,
        "github_push",
    )


async def test_tag_pushes_deploy_nothing(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    sha = connected.commit("main", "A")
    deleted_tag = payload("push.with-installation.payload.json")  # refs/tags/simple-tag deleted
    new_tag = payload("push.with-new-branch.payload.json", ref="refs/tags/v1", after=sha)
    for data in (deleted_tag, new_tag, payload("push.payload.json")):
        assert (await deliver(client, "push", data)).status_code == 202
    await run_webhook_jobs(platform)
    assert await count(platform, Deployment) == 0


async def test_branch_deletion_removes_alias_and_runtime(
    client: httpx.AsyncClient, platform: Platform, connected: Connected, live: Any
) -> None:
    sha = connected.commit("feature/gone", "doomed")
    await deliver(client, "push", push_payload("feature/gone", sha))
    await run_webhook_jobs(platform)
    [deployment] = await project_deployments(platform, connected.project_id)
    handle = await live(deployment.id)
    assert await count(platform, Alias, Alias.project_id == connected.project_id) == 2

    deletion = push_payload("feature/gone", "0" * 40, before=sha, deleted=True, created=False)
    assert (await deliver(client, "push", deletion)).status_code == 202
    await run_webhook_jobs(platform)
    assert await count(platform, Alias, Alias.project_id == connected.project_id) == 0
    status = await platform.runtimes.get("process").status(handle)
    assert status.state == InstanceState.missing
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment.id)
        assert row.runtime_handle is None
    assert await count(platform, Deployment) == 1  # history stays


async def test_branch_deletion_keeps_what_an_environment_serves(
    client: httpx.AsyncClient, platform: Platform, connected: Connected, live: Any
) -> None:
    sha = connected.commit("main", "prod")
    await deliver(client, "push", push_payload("main", sha))
    await run_webhook_jobs(platform)
    [deployment] = await project_deployments(platform, connected.project_id)
    handle = await live(deployment.id)
    await deliver(client, "push", push_payload("main", "0" * 40, deleted=True))
    await run_webhook_jobs(platform)
    async with session_scope(platform.sessions) as session:
        kinds = {a.type for a in await session.scalars(select(Alias))}
    assert AliasType.branch not in kinds and AliasType.environment in kinds
    status = await platform.runtimes.get("process").status(handle)
    assert status.state != InstanceState.missing


# ---- pull requests -------------------------------------------------------------------------
async def test_pull_request_preview_opens_and_closes(
    client: httpx.AsyncClient,
    platform: Platform,
    connected: Connected,
    github: GithubDouble,
    live: Any,
    tmp_path: Path,
) -> None:
    sha = connected.commit("changes", "pr body")  # the fixture's head ref is "changes"
    git(connected.work, "push", "-q", "origin", "HEAD:refs/pull/2/head")  # as GitHub keeps it
    await deliver(client, "pull_request", pr_payload("pull_request.opened.payload.json", sha))
    await run_webhook_jobs(platform)
    [deployment] = await project_deployments(platform, connected.project_id)
    assert (deployment.trigger, deployment.pr_number, deployment.branch) == (
        "github_pr",
        2,
        "changes",
    )
    assert deployment.commit_sha == sha and deployment.environment_id is None
    project = await project_row(platform, connected.project_id)
    source = await remote.for_deployment(platform, project, deployment)
    assert source.ref == "refs/pull/2/head"
    commit = await gitsource.fetch(
        mirror=tmp_path / "mirror.git",
        url=source.url,
        branch=deployment.branch,
        commit_sha=sha,
        ref=source.ref,
        credentials=source.credentials,
    )
    assert commit.sha == sha

    handle = await live(deployment.id)
    pr_alias = f"{connected.slug}-pr-2"
    assert await count(platform, Alias, Alias.value == pr_alias) == 1

    await deliver(client, "pull_request", pr_payload("pull_request.closed.payload.json", sha))
    await run_webhook_jobs(platform)
    assert await count(platform, Alias, Alias.value == pr_alias) == 0
    assert await count(platform, Alias, Alias.project_id == connected.project_id) == 0
    assert (await platform.runtimes.get("process").status(handle)).state == InstanceState.missing
    async with session_scope(platform.sessions) as session:
        pr = await session.scalar(select(GithubPullRequest))
        assert pr is not None and (pr.number, pr.state) == (2, "closed")


async def test_closing_cancels_a_preview_still_building(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    sha = connected.commit("changes", "slow")
    await deliver(client, "pull_request", pr_payload("pull_request.opened.payload.json", sha))
    await deliver(client, "pull_request", pr_payload("pull_request.closed.payload.json", sha))
    await run_webhook_jobs(platform)
    [deployment] = await project_deployments(platform, connected.project_id)
    assert (deployment.status, deployment.conclusion) == (Status.completed, Conclusion.canceled)


async def test_reopen_and_synchronize_redeploy(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    first = connected.commit("changes", "one")
    second = connected.commit("changes", "two")
    await deliver(client, "pull_request", pr_payload("pull_request.reopened.payload.json", first))
    await deliver(
        client, "pull_request", pr_payload("pull_request.synchronize.payload.json", second)
    )
    await run_webhook_jobs(platform)
    rows = await project_deployments(platform, connected.project_id)
    assert [d.commit_sha for d in rows] == [first, second]
    assert rows[0].conclusion == Conclusion.skipped  # superseded by the newer push


async def test_fork_pull_requests_need_the_project_to_allow_them(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    sha = connected.commit("changes", "from a fork")
    fork = {"id": 999999, "full_name": "Forker/Hello-World", "name": "Hello-World"}
    opened = pr_payload("pull_request.opened.payload.json", sha, repo=fork)
    await deliver(client, "pull_request", opened)
    await run_webhook_jobs(platform)
    assert await project_deployments(platform, connected.project_id) == []
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, connected.project_id)
        assert project is not None
        project.allowed_forks = ["forker"]
    await deliver(client, "pull_request", opened)
    await run_webhook_jobs(platform)
    [deployment] = await project_deployments(platform, connected.project_id)
    assert deployment.pr_number == 2
    # a fork's branch named like an environment's would get that environment's variables
    from_main = pr_payload("pull_request.opened.payload.json", sha, repo=fork, ref="main")
    await deliver(client, "pull_request", from_main)
    await run_webhook_jobs(platform)
    assert len(await project_deployments(platform, connected.project_id)) == 1
    deleted_fork = pr_payload("pull_request.opened.payload.json", sha, repo=None)
    await deliver(client, "pull_request", deleted_fork)
    await run_webhook_jobs(platform)
    assert len(await project_deployments(platform, connected.project_id)) == 1


async def test_fork_setting_is_validated(
    client: httpx.AsyncClient, alice: Account, connected: Connected
) -> None:
    url = f"/api/v1/projects/{connected.project_id}"
    ok = await client.patch(
        url, json={"allowed_forks": ["Forker", "a/b", "*"]}, headers=alice.headers
    )
    assert ok.status_code == 200, ok.text
    for bad in (["$(id)"], ["a/b/c"], ["-x"], ["x" * 200]):
        response = await client.patch(url, json={"allowed_forks": bad}, headers=alice.headers)
        assert response.status_code == 422, bad
    git_source = await client.get(f"{url}/git", headers=alice.headers)
    assert git_source.json()["allowed_forks"] == ["forker", "a/b", "*"]


# ---- installations and repositories --------------------------------------------------------
async def test_installation_lifecycle(
    client: httpx.AsyncClient, platform: Platform, alice: Account, connected: Connected
) -> None:
    await deliver(client, "installation", payload("installation.created.payload.json"))
    await deliver(client, "installation", payload("installation.suspend.payload.json"))
    await run_webhook_jobs(platform)
    async with session_scope(platform.sessions) as session:
        created = await session.get(GithubInstallation, 957387)
        suspended = await session.get(GithubInstallation, 16598467)
        assert created is not None and created.account_login == "Codertocat"
        assert suspended is not None and suspended.suspended_at is not None
    await deliver(client, "installation", payload("installation.unsuspend.payload.json"))
    await run_webhook_jobs(platform)
    async with session_scope(platform.sessions) as session:
        suspended = await session.get(GithubInstallation, 16598467)
        assert suspended is not None and suspended.suspended_at is None

    deleted = payload("installation.deleted.payload.json")
    deleted["installation"]["id"] = INSTALLATION_ID
    await deliver(client, "installation", deleted)
    await run_webhook_jobs(platform)
    project = await project_row(platform, connected.project_id)
    assert project.repo_status == "disconnected"
    assert await count(platform, GithubInstallation, GithubInstallation.id == INSTALLATION_ID) == 0
    # installed again (a new installation id): the project follows
    await deliver(client, "installation", payload("installation.created.payload.json"))
    await run_webhook_jobs(platform)
    project = await project_row(platform, connected.project_id)
    assert (project.repo_status, project.github_installation_id) == (None, 957387)


async def test_installation_repositories_removed_and_added(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    removed = payload("installation_repositories.removed.payload.json")
    removed["installation"]["id"] = INSTALLATION_ID
    removed["repositories_removed"][0]["id"] = REPO_ID
    await deliver(client, "installation_repositories", removed)
    await run_webhook_jobs(platform)
    assert (await project_row(platform, connected.project_id)).repo_status == "disconnected"
    sha = connected.commit("main", "ignored")
    await deliver(client, "push", push_payload("main", sha))
    await run_webhook_jobs(platform)
    assert await count(platform, Deployment) == 0  # a disconnected project does not deploy
    added = payload("installation_repositories.added.payload.json")
    added["repositories_added"][0]["id"] = REPO_ID
    await deliver(client, "installation_repositories", added)
    await run_webhook_jobs(platform)
    project = await project_row(platform, connected.project_id)
    assert (project.repo_status, project.github_installation_id) == (None, 957387)


async def test_repository_renamed_transferred_deleted(
    client: httpx.AsyncClient, platform: Platform, connected: Connected
) -> None:
    renamed = payload("repository.renamed.payload.json")
    renamed["repository"]["id"] = REPO_ID
    await deliver(client, "repository", renamed)
    await run_webhook_jobs(platform)
    project = await project_row(platform, connected.project_id)
    assert project.github_repo_full_name == "Octocoders/Hello-World"
    assert project.repo_url == f"{platform.settings.github_url}/Octocoders/Hello-World.git"
    transferred = payload("repository.transferred.with-installation.payload.json")
    transferred["repository"]["id"] = REPO_ID
    transferred["repository"]["full_name"] = "NewOwner/Hello-World"
    await deliver(client, "repository", transferred)
    await run_webhook_jobs(platform)
    project = await project_row(platform, connected.project_id)
    assert project.github_repo_full_name == "NewOwner/Hello-World"
    deleted = payload("repository.renamed.payload.json", action="deleted")
    deleted["repository"]["id"] = REPO_ID
    await deliver(client, "repository", deleted)
    await run_webhook_jobs(platform)
    assert (await project_row(platform, connected.project_id)).repo_status == "deleted"


# ---- hostile input ----------------------------------------------------------------------------
async def test_shell_metacharacters_in_a_ref_are_only_data(
    client: httpx.AsyncClient,
    platform: Platform,
    connected: Connected,
    github: GithubDouble,
    tmp_path: Path,
) -> None:
    MARKER.unlink(missing_ok=True)
    branch = f"feat/$(touch${{IFS}}{MARKER});`touch${{IFS}}{MARKER}`"
    sha = connected.commit(branch, "hostile")
    await deliver(client, "push", push_payload(branch, sha))
    await run_webhook_jobs(platform)
    [deployment] = await project_deployments(platform, connected.project_id)
    assert deployment.branch == branch
    project = await project_row(platform, connected.project_id)
    source = await remote.for_deployment(platform, project, deployment)
    commit = await gitsource.fetch(
        mirror=tmp_path / "m.git",
        url=source.url,
        branch=branch,
        commit_sha=sha,
        ref=source.ref,
        credentials=source.credentials,
    )
    assert commit.sha == sha
    # refs git itself refuses are ignored, not run
    for bad in ("refs/heads/a b", "refs/heads/-x", "refs/heads/a..b", "refs/heads/x\n;id"):
        assert (await deliver(client, "push", push_payload(bad[11:], sha))).status_code == 202
    await run_webhook_jobs(platform)
    assert await count(platform, Deployment) == 1
    assert not MARKER.exists()


async def test_hostile_repository_names_are_refused(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    for name in (f"Codertocat/$(touch {MARKER})", "a/b/c", "../../etc", "Codertocat/x;id"):
        data = payload("repository.renamed.payload.json")
        data["repository"]["full_name"] = name
        response = await deliver(client, "repository", data)
        assert response.status_code == 422, name
        assert "repository.full_name" in response.json()["error"]["message"]
    assert await count(platform, GithubDelivery) == 0
    assert not MARKER.exists()


async def test_huge_body_is_refused_before_parsing(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    body = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    response = await deliver(client, "push", body)
    assert response.status_code == 413
    assert "MiB" in response.json()["error"]["message"]

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(11):
            yield b" " * (1024 * 1024)

    streamed = await client.post(
        "/api/github/webhook",
        content=chunks(),
        headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "big", "X-Hub-Signature-256": "x"},
    )
    assert streamed.status_code == 413
    assert await count(platform, GithubDelivery) == 0


async def test_malformed_payloads_get_clear_4xx(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    no_after = payload("push.with-new-branch.payload.json")
    del no_after["after"]
    no_head = payload("pull_request.opened.payload.json")
    del no_head["pull_request"]["head"]
    bad_sha = payload("push.with-new-branch.payload.json", after="$(id)")
    cases = [
        ("push", no_after, "after"),
        ("pull_request", no_head, "pull_request.head"),
        ("push", bad_sha, "after"),
        ("installation", {"action": "created"}, "installation"),
        ("push", [1, 2], "JSON object"),
    ]
    for event, data, needle in cases:
        response = await deliver(client, event, data)
        assert response.status_code == 422, (event, response.text)
        assert needle in response.json()["error"]["message"], response.text
    not_json = await deliver(client, "push", b"{not json")
    assert not_json.status_code == 422 and "not JSON" in not_json.json()["error"]["message"]
    no_event = await client.post(
        "/api/github/webhook", content=b"{}", headers={"X-Hub-Signature-256": sign(b"{}")}
    )
    assert no_event.status_code == 422 and "X-GitHub-Event" in no_event.json()["error"]["message"]
    bad_delivery = await deliver(client, "push", payload("push.payload.json"), delivery="../x y")
    assert bad_delivery.status_code == 422
    assert await count(platform, GithubDelivery) == 0
    assert not MARKER.exists()
