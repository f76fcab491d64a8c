"""The apps people push, deployed with no devpush.toml and no commands, on both runtimes:
each goes live through Traefik and serves what the app really serves (Django's collected CSS,
the SPA's hashed assets, Express under NODE_ENV=production). Package caches are shared by
every platform these tests start, as they are on one server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apps.corpus import APPS, SampleApp, asset_paths
from tests.e2e.apps import Api, git
from tests.e2e.conftest import PODMAN_SOCKET, _podman_ready
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

pytestmark = pytest.mark.corpus

# One cache for every test platform on this machine (kept between CI runs on the same host).
SHARED_CACHE = Path("/var/cache/devpush/test-build-cache")
IGNORED = shutil.ignore_patterns(
    "node_modules", ".venv", "dist", "build", ".next", "__pycache__", "db.sqlite3", "staticfiles"
)


@pytest.fixture(scope="module", params=["process", "docker"])
def build_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    runtime = request.param
    data = tmp_path_factory.mktemp(f"corpus-{runtime}")
    extra = {
        "DEVPUSH_RUNTIME": runtime,
        "DEVPUSH_BUILD_TIMEOUT": "900",
        "DEVPUSH_DEPLOY_TIMEOUT": "60",
        "DEVPUSH_BUILD_CACHE_DIR": str(SHARED_CACHE),
        "DEVPUSH_VERIFY_DOMAINS": "false",
    }
    if runtime == "docker":
        _podman_ready()
        extra |= {
            "DEVPUSH_DOCKER_HOST": PODMAN_SOCKET,
            "DEVPUSH_RUNNER_IMAGE": "localhost/devpush-runner-python:3.11",
        }
    running = start_platform(data, env=platform_env(data, **extra))
    wait_health(running.app_url)
    yield running
    code = running.stop()
    if runtime == "docker":
        running.remove_containers()
    assert code == 0, running.text()[-3000:]


@pytest.fixture(scope="module")
def api(build_platform: RunningPlatform) -> Api:
    return Api(build_platform.app_url, build_platform.token(), build_platform.proxy_url)


def push_app(app: SampleApp, repo: Path) -> Path:
    """The app as a user's repository: its files, committed on main."""
    shutil.copytree(app.path, repo, ignore=IGNORED)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{app.name}: initial commit")
    return repo


def create_project(api: Api, repo: Path, name: str) -> dict[str, Any]:
    """A project with nothing set but the repository: detection does the rest."""
    body = {"name": name, "repo_url": f"file://{repo}"}
    return dict(api.post(f"/api/v1/teams/{api.team()}/projects", body, expect=201))


def build_log(api: Api, project_id: str, deployment_id: str) -> list[str]:
    page = api.get(f"/api/v1/projects/{project_id}/logs", deployment=deployment_id, limit=1000)
    return [item["message"] for item in reversed(page["items"])]


def deploy(api: Api, project: dict[str, Any]) -> dict[str, Any]:
    deployment = api.deploy(project["id"])
    return api.wait(deployment["id"], timeout=900)


LIVE = [app for app in APPS if app.expect_failure is None]


@pytest.mark.parametrize("app", LIVE, ids=[app.name for app in LIVE])
def test_app_goes_live_and_serves_what_it_serves(api: Api, tmp_path: Path, app: SampleApp) -> None:
    repo = push_app(app, tmp_path / app.name)
    project = create_project(api, repo, app.name)
    done = deploy(api, project)
    log = build_log(api, project["id"], done["id"])
    assert done["conclusion"] == "succeeded", "\n".join([done["error"] or "", *log[-60:]])
    assert any(line.startswith("Plan: ") for line in log), log[:20]
    url = done["urls"]["deployment"]
    for check in app.checks:
        response = api.serve(url.rstrip("/") + check.path)
        assert response.status_code == check.status, (check, response.text[:300])
        if check.contains:
            assert check.contains in response.text, (check, response.text[:300])
        if check.header:
            name, value = check.header
            header = response.headers.get(name, "")
            assert value.lower() in header.lower(), (check, response.headers)
    if app.name == "vite-spa":
        assets = asset_paths(api.serve(url).text)
        assert any(path.endswith(".js") for path in assets), assets
        for path in assets:
            response = api.serve(url.rstrip("/") + path)
            assert response.status_code == 200, path
            assert "immutable" in response.headers["cache-control"], response.headers
            assert "<html" not in response.text[:200].lower(), path  # not the SPA fallback


def test_an_unavailable_python_fails_in_one_line_naming_it(api: Api, tmp_path: Path) -> None:
    app = next(app for app in APPS if app.expect_failure)
    repo = push_app(app, tmp_path / app.name)
    project = create_project(api, repo, app.name)
    done = deploy(api, project)
    assert done["conclusion"] == "failed"
    assert app.expect_failure and app.expect_failure in done["error"]
    assert ".python-version asks for 3.9" in done["error"] and "3.11" in done["error"]
    assert "\n" not in done["error"]
