"""`git push` straight to devpush, end to end on a real `devpush up` (process runtime): the
push prints the deployment URL and follows the build until it is live, a second push
redeploys, `-o nofollow` returns at once, a bad token is refused, and a project can deploy from
another git remote over HTTP with a stored token (GIT_ASKPASS on the worker)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.apps import APP, Api
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def push_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("platform-git-push")
    extra = {
        "DEVPUSH_RUNTIME": "process",
        "DEVPUSH_DEPLOY_TIMEOUT": "20",
        "DEVPUSH_VERIFY_DOMAINS": "false",
    }
    running = start_platform(data, env=platform_env(data, **extra))
    wait_health(running.app_url)
    yield running
    code = running.stop()
    assert code == 0, running.text()[-3000:]


@pytest.fixture(scope="module")
def token(push_platform: RunningPlatform) -> str:
    return push_platform.token()


@pytest.fixture(scope="module")
def api(push_platform: RunningPlatform, token: str) -> Api:
    return Api(push_platform.app_url, token, push_platform.proxy_url)


def git(repo: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(repo),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "LANG": "C.UTF-8",
        },
    )


def make_work(path: Path, body: str) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text(APP)
    return commit(path, body)


def commit(repo: Path, body: str) -> Path:
    (repo / "body.txt").write_text(body + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"body {body}")
    return repo


def remote_url(platform: RunningPlatform, team: str, slug: str, token: str | None) -> str:
    auth = f"me:{token}@" if token else ""
    return f"http://{auth}127.0.0.1:{platform.env['DEVPUSH_APP_PORT']}/git/{team}/{slug}.git"


def new_push_project(api: Api, name: str, **fields: object) -> dict[str, object]:
    body = {"name": name, "start_command": "python3 app.py", "health_path": "/", **fields}
    return dict(api.post(f"/api/v1/teams/{api.team()}/projects", body, expect=201))


def deployment_url(output: str) -> str:
    match = re.search(r"remote:\s+deployment\s+(\S+)", output)
    assert match, output
    return match.group(1)


def test_push_deploys_follows_the_build_and_redeploys(
    api: Api, push_platform: RunningPlatform, token: str, tmp_path: Path
) -> None:
    project = new_push_project(api, "pushed", build_command="echo building the app")
    work = make_work(tmp_path / "work", "first")
    url = remote_url(push_platform, api.team(), str(project["slug"]), token)

    pushed = git(work, "push", url, "main")
    assert pushed.returncode == 0, pushed.stderr
    output = pushed.stderr
    assert "remote: Deploying main at" in output
    first_url = deployment_url(output)
    assert first_url.startswith(f"http://{project['slug']}-id-")
    assert "remote: [build] building the app" in output  # the build log, followed live
    assert f"remote: Deployment succeeded: http://{project['slug']}." in output
    assert api.body(first_url) == "first"

    commit(work, "second")
    again = git(work, "push", url, "main")
    assert again.returncode == 0, again.stderr
    assert "remote: Deployment succeeded:" in again.stderr
    second_url = deployment_url(again.stderr)
    assert second_url != first_url
    assert api.body(second_url) == "second"
    production = next(
        e["url"]
        for e in api.get(f"/api/v1/projects/{project['id']}")["environments"]
        if e["is_production"]
    )
    assert api.body(production) == "second"
    listing = api.get(f"/api/v1/projects/{project['id']}/deployments")["items"]
    assert [d["trigger"] for d in listing] == ["git_push", "git_push"]


def test_nofollow_returns_quickly(
    api: Api, push_platform: RunningPlatform, token: str, tmp_path: Path
) -> None:
    project = new_push_project(api, "quick", build_command="sleep 20")
    work = make_work(tmp_path / "work", "quick")
    url = remote_url(push_platform, api.team(), str(project["slug"]), token)
    pushed = git(work, "push", "-o", "nofollow", url, "main")
    assert pushed.returncode == 0, pushed.stderr
    assert "Deployment succeeded" not in pushed.stderr
    # The push came back while the build (20 s of it) still runs: it did not wait for it.
    deployment = api.get(f"/api/v1/projects/{project['id']}/deployments")["items"][0]
    assert deployment["status"] != "completed", deployment
    assert api.wait(deployment["id"])["conclusion"] == "succeeded"
    assert api.body(deployment_url(pushed.stderr)) == "quick"


def test_push_output_streams_while_the_build_runs(
    api: Api, push_platform: RunningPlatform, token: str, tmp_path: Path
) -> None:
    """The build log reaches the pusher as it happens, not in one piece at the end."""
    project = new_push_project(
        api, "streamed", build_command="echo step one; sleep 3; echo step two"
    )
    work = make_work(tmp_path / "work", "streamed")
    url = remote_url(push_platform, api.team(), str(project["slug"]), token)
    proc = subprocess.Popen(
        ["git", "push", url, "main"],
        cwd=work,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(work), "GIT_TERMINAL_PROMPT": "0"},
    )
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    for line in proc.stderr:
        # the build's own output ("[build] step one"), not the plan that quotes the command
        for needle in ("[build] step one", "[build] step two", "Deployment succeeded"):
            if needle in line and needle not in seen:
                seen[needle] = time.monotonic()
    assert proc.wait(120) == 0
    assert set(seen) == {"[build] step one", "[build] step two", "Deployment succeeded"}, seen
    assert seen["[build] step two"] - seen["[build] step one"] >= 2.5


def test_bad_token_is_refused(
    api: Api, push_platform: RunningPlatform, token: str, tmp_path: Path
) -> None:
    project = new_push_project(api, "guarded")
    work = make_work(tmp_path / "work", "nope")
    for bad in ("dp_bad_token", None):
        url = remote_url(push_platform, api.team(), str(project["slug"]), bad)
        refused = git(work, "push", url, "main", timeout=60)
        assert refused.returncode != 0
    assert api.get(f"/api/v1/projects/{project['id']}/deployments")["items"] == []


def test_project_deploys_from_an_authenticated_http_remote(
    api: Api, push_platform: RunningPlatform, token: str, tmp_path: Path
) -> None:
    """Project `consumer` deploys from project `origin`'s remote: an HTTP git server that
    wants a token, which the worker hands to git through GIT_ASKPASS."""
    origin = new_push_project(api, "origin")
    work = make_work(tmp_path / "work", "from elsewhere")
    origin_url = remote_url(push_platform, api.team(), str(origin["slug"]), token)
    assert git(work, "push", "-o", "nofollow", origin_url, "main").returncode == 0
    consumer = new_push_project(
        api,
        "consumer",
        repo_url=remote_url(push_platform, api.team(), str(origin["slug"]), None),
        repo_credentials={"username": "worker", "token": token},
    )
    deployment = api.wait(api.deploy(str(consumer["id"]))["id"])
    assert deployment["conclusion"] == "succeeded", deployment
    assert api.body(deployment["urls"]["deployment"]) == "from elsewhere"
    logs = push_platform.text()
    assert token not in logs
