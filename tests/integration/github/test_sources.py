"""The platform's push remote with the real git client (on a real HTTP server in this event
loop; pushes use `-o nofollow`, since no worker runs here: tests/e2e/test_git_push.py follows
builds), generic git URLs with stored credentials (GIT_ASKPASS against that remote), and the
deploy hook."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from devpush import git as gitsource
from devpush.app import create_app
from devpush.db import session_scope
from devpush.deployments import remote
from devpush.deployments.models import Deployment
from devpush.errors import RuntimeFailure
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.projects.repository import push_repo
from tests.conftest import free_port
from tests.factories.auth import Account, token_for

MARKER = Path("/tmp/devpush-push-pwned")


@pytest.fixture
async def server(platform: Platform) -> AsyncIterator[str]:
    """The app on a real HTTP server in this event loop (git needs a real socket)."""
    app = create_app(platform.settings)
    app.state.platform = platform
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    config.timeout_graceful_shutdown = 2
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await task


@dataclass
class Result:
    code: int
    output: str


async def run_git(cwd: Path, *args: str, home: Path) -> Result:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.com",
        *args,
        cwd=cwd,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "LANG": "C.UTF-8",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(errors="replace"))


@dataclass
class Pusher:
    work: Path
    home: Path
    server: str
    team: str
    project_id: str
    slug: str

    def url(self, token: str | None, slug: str | None = None) -> str:
        auth = f"me:{token}@" if token is not None else ""
        return f"http://{auth}{self.server}/git/{self.team}/{slug or self.slug}.git"

    async def git(self, *args: str) -> Result:
        return await run_git(self.work, *args, home=self.home)

    async def commit(self, body: str, branch: str = "main") -> str:
        (self.work / "body.txt").write_text(body + "\n")
        await self.git("add", "-A")
        await self.git("commit", "-q", "-m", f"body {body}")
        return (await self.git("rev-parse", "HEAD")).output.strip()


@pytest.fixture
async def pusher(client: httpx.AsyncClient, alice: Account, server: str, tmp_path: Path) -> Pusher:
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "pushy", "start_command": "python3 app.py"},
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    p = Pusher(work, home, server, alice.team_slug, created.json()["id"], created.json()["slug"])
    await p.git("init", "-q", "-b", "main")
    (work / "app.py").write_text("print('hi')\n")
    await p.commit("A")
    return p


async def deployments_of(platform: Platform, project_id: str) -> list[Deployment]:
    async with session_scope(platform.sessions) as session:
        rows = await session.scalars(
            select(Deployment)
            .where(Deployment.project_id == project_id)
            .order_by(Deployment.created_at)
        )
        return list(rows)


# ---- the push remote ---------------------------------------------------------------------------
async def test_push_deploys_and_shows_the_url(
    platform: Platform, pusher: Pusher, alice: Account
) -> None:
    sha = (await pusher.git("rev-parse", "HEAD")).output.strip()
    started = time.monotonic()
    pushed = await pusher.git("push", "-o", "nofollow", pusher.url(alice.token), "main")
    assert pushed.code == 0, pushed.output
    assert time.monotonic() - started < 10
    [deployment] = await deployments_of(platform, pusher.project_id)
    assert (deployment.trigger, deployment.branch, deployment.commit_sha) == (
        "git_push",
        "main",
        sha,
    )
    assert deployment.created_by == alice.user_id
    url = platform.settings.deploy_url(f"{pusher.slug}-id-{deployment.id[:7]}")
    assert f"remote: Deploying main at {sha[:7]}" in pushed.output
    assert url in pushed.output and "nofollow" in pushed.output
    queued = {(j.function, j.args[0]) for j in await platform.redis.queued_jobs()}
    assert ("start_deployment", deployment.id) in queued
    # the commits are in the bare repository the worker fetches from
    bare = push_repo(platform.settings, pusher.project_id)
    assert (await run_git(bare, "cat-file", "-t", sha, home=pusher.home)).output.strip() == "commit"

    second_sha = await pusher.commit("B")
    again = await pusher.git("push", "-o", "nofollow", pusher.url(alice.token), "main")
    assert again.code == 0, again.output
    rows = await deployments_of(platform, pusher.project_id)
    assert [d.commit_sha for d in rows] == [sha, second_sha]

    clone = await run_git(
        pusher.home, "clone", "-q", pusher.url(alice.token), "c", home=pusher.home
    )
    assert clone.code == 0, clone.output
    head = await run_git(pusher.home / "c", "rev-parse", "HEAD", home=pusher.home)
    assert head.output.strip() == second_sha


async def test_bad_or_missing_tokens_are_refused(
    platform: Platform, pusher: Pusher, alice: Account, bob: Account, server: str
) -> None:
    no_token = await pusher.git("push", pusher.url(None), "main")
    assert no_token.code != 0
    bad = await pusher.git("push", pusher.url("dp_nope_nope"), "main")
    assert bad.code != 0 and "Authentication failed" in bad.output
    other_team = await pusher.git("push", pusher.url(bob.token), "main")
    assert other_team.code != 0 and "403" in other_team.output
    read_only = await token_for(platform, alice.user_id, scopes=["read"])
    refused = await pusher.git("push", pusher.url(read_only), "main")
    assert refused.code != 0 and "deploy" in refused.output
    clone = await run_git(pusher.home, "clone", "-q", pusher.url(read_only), "ro", home=pusher.home)
    assert clone.code == 0, clone.output  # reading is allowed
    assert await deployments_of(platform, pusher.project_id) == []
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        path = f"/git/{pusher.team}/{pusher.slug}.git/info/refs"
        anonymous = await http.get(path, params={"service": "git-receive-pack"})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        dumb = await http.get(f"/git/{pusher.team}/{pusher.slug}.git/HEAD", auth=("x", alice.token))
        assert dumb.status_code == 404


async def test_non_fast_forward_is_refused_unless_forced(
    platform: Platform, pusher: Pusher, alice: Account
) -> None:
    url = pusher.url(alice.token)
    assert (await pusher.git("push", "-o", "nofollow", url, "main")).code == 0
    await pusher.git("commit", "-q", "--amend", "-m", "rewritten")
    refused = await pusher.git("push", "-o", "nofollow", url, "main")
    assert refused.code != 0 and "rejected" in refused.output
    assert len(await deployments_of(platform, pusher.project_id)) == 1
    forced = await pusher.git("push", "-o", "nofollow", "--force", url, "main")
    assert forced.code == 0, forced.output
    assert len(await deployments_of(platform, pusher.project_id)) == 2


async def test_projects_with_another_source_refuse_pushes(
    client: httpx.AsyncClient, platform: Platform, pusher: Pusher, alice: Account
) -> None:
    await client.patch(
        f"/api/v1/projects/{pusher.project_id}",
        json={"repo_url": "https://example.invalid/x.git"},
        headers=alice.headers,
    )
    refused = await pusher.git("push", pusher.url(alice.token), "main")
    assert refused.code != 0 and "push there" in refused.output


async def test_hostile_ref_names_and_branch_deletion(
    platform: Platform, pusher: Pusher, alice: Account
) -> None:
    MARKER.unlink(missing_ok=True)
    url = pusher.url(alice.token)
    branch = f"feat/$(touch${{IFS}}{MARKER})"
    pushed = await pusher.git("push", "-o", "nofollow", url, f"HEAD:refs/heads/{branch}")
    assert pushed.code == 0, pushed.output
    [deployment] = await deployments_of(platform, pusher.project_id)
    assert deployment.branch == branch
    tag = await pusher.git("push", "-o", "nofollow", url, "HEAD:refs/tags/v1")
    assert tag.code == 0 and "nothing to deploy" in tag.output
    deleted = await pusher.git("push", url, f":refs/heads/{branch}")
    assert deleted.code == 0, deleted.output
    assert "preview is being removed" in deleted.output
    retire = [j for j in await platform.redis.queued_jobs() if j.function == "retire_branch"]
    assert [tuple(j.args) for j in retire] == [(pusher.project_id, branch)]
    assert len(await deployments_of(platform, pusher.project_id)) == 1
    assert not MARKER.exists()


# ---- generic git URLs with credentials --------------------------------------------------------
async def test_https_token_reaches_git_only_through_askpass(
    client: httpx.AsyncClient,
    platform: Platform,
    pusher: Pusher,
    alice: Account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A project deploying from another devpush remote (an HTTP git server that wants a
    token): the worker's fetch authenticates, and the token is in no argv and no error."""
    assert (await pusher.git("push", "-o", "nofollow", pusher.url(alice.token), "main")).code == 0
    sha = (await pusher.git("rev-parse", "HEAD")).output.strip()
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={
            "name": "consumer",
            "repo_url": pusher.url(None),
            "repo_credentials": {"username": "ci", "token": alice.token},
        },
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    assert alice.token not in created.text
    source_view = await client.get(
        f"/api/v1/projects/{created.json()['id']}/git", headers=alice.headers
    )
    assert (source_view.json()["source"], source_view.json()["credentials"]) == ("git", "token")
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, created.json()["id"])
        assert project is not None and project.repo_credentials_enc
        assert alice.token not in project.repo_credentials_enc
        deployment = Deployment(project_id=project.id, branch="main", pr_number=None)
        source = await remote.for_deployment(platform, project, deployment)

    argvs: list[tuple[str, ...]] = []
    real_exec = asyncio.create_subprocess_exec

    async def recording_exec(*args: Any, **kwargs: Any) -> Any:
        argvs.append(tuple(str(a) for a in args))
        return await real_exec(*args, **kwargs)

    monkeypatch.setattr(gitsource.asyncio, "create_subprocess_exec", recording_exec)
    commit = await gitsource.fetch(
        mirror=tmp_path / "m.git",
        url=source.url,
        branch="main",
        ref=source.ref,
        credentials=source.credentials,
    )
    assert commit.sha == sha
    wrong = gitsource.Credentials(username="ci", token="dp_wrong_" + "s3cr3t" * 4)
    with pytest.raises(RuntimeFailure) as failure:
        await gitsource.fetch(
            mirror=tmp_path / "m.git", url=source.url, branch="main", credentials=wrong
        )
    assert wrong.token not in failure.value.message
    assert argvs and not any(
        alice.token in " ".join(a) or wrong.token in " ".join(a) for a in argvs
    )
    assert not list(Path("/tmp").glob("devpush-git-*"))  # the askpass dir is gone


async def test_ssh_key_env_uses_a_private_temp_file() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    credentials = gitsource.Credentials(ssh_key=key, known_hosts="example.com ssh-ed25519 AAAA")
    async with gitsource.auth_env(credentials) as env:
        command = env["GIT_SSH_COMMAND"]
        assert key not in command and "StrictHostKeyChecking=yes" in command
        key_file = Path(command.split(" -i ")[1].split(" ")[0])
        assert key_file.read_text().strip() == key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert not key_file.exists() and not key_file.parent.exists()


async def test_repo_credentials_are_validated(client: httpx.AsyncClient, alice: Account) -> None:
    url = f"/api/v1/teams/{alice.team_slug}/projects"
    for credentials in (
        {},
        {"token": "a b"},
        {"token": "x", "ssh_key": "-----BEGIN OPENSSH PRIVATE KEY-----"},
        {"ssh_key": "not a key"},
        {"token": "x", "username": "$(id)"},
        {"token": "x", "extra": 1},
    ):
        response = await client.post(
            url,
            json={"name": "creds", "repo_url": "https://h/x.git", "repo_credentials": credentials},
            headers=alice.headers,
        )
        assert response.status_code == 422, credentials


# ---- the deploy hook -------------------------------------------------------------------------
async def test_deploy_hook(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account
) -> None:
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "hooked", "repo_url": "https://example.invalid/app.git"},
        headers=alice.headers,
    )
    project_id = created.json()["id"]
    refused = await client.post(f"/api/v1/projects/{project_id}/deploy-hook", headers=bob.headers)
    assert refused.status_code == 404
    made = await client.post(f"/api/v1/projects/{project_id}/deploy-hook", headers=alice.headers)
    assert made.status_code == 201
    hook = httpx.URL(made.json()["url"])
    token = hook.path.rsplit("/", 1)[1]
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None and project.deploy_hook_token_hash
        assert token not in project.deploy_hook_token_hash

    for bad in (f"/api/hooks/deploy/{project_id}/dph_wrong", f"/api/hooks/deploy/nope/{token}"):
        assert (await client.post(bad)).status_code == 404
    hostile = await client.post(hook.path, params={"branch": "main\n;touch /tmp/x"})
    assert hostile.status_code == 422
    ok = await client.post(hook.path, params={"branch": "release/1"})
    assert ok.status_code == 201, ok.text
    assert ok.json()["branch"] == "release/1"
    default = await client.post(hook.path)
    assert default.json()["branch"] == "main"
    async with session_scope(platform.sessions) as session:
        triggers = list(
            await session.scalars(
                select(Deployment.trigger).where(Deployment.project_id == project_id)
            )
        )
    assert triggers == ["deploy_hook", "deploy_hook"]

    rotated = await client.post(f"/api/v1/projects/{project_id}/deploy-hook", headers=alice.headers)
    assert (await client.post(hook.path)).status_code == 404  # the old URL stops working
    assert (await client.post(httpx.URL(rotated.json()["url"]).path)).status_code == 201
    await client.delete(f"/api/v1/projects/{project_id}/deploy-hook", headers=alice.headers)
    assert (await client.post(httpx.URL(rotated.json()["url"]).path)).status_code == 404
    async with session_scope(platform.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Deployment)) == 3
