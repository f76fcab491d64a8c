"""Persistent volumes end to end, on both runtimes (issue #20): a Flask app behind gunicorn keeps
its notes in SQLite on a volume its devpush.toml declares. What it writes survives a redeploy, a
rollback (the previous deployment, kept warm, opens the same database) and a restart of the
whole platform; a preview gets an empty copy and can't be promoted onto production's data;
another project's copy is its own; deleting the project asks first, then removes the data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.corpus import APPS_DIR
from tests.e2e.apps import Api, commit, git, push_app
from tests.e2e.conftest import (
    PODMAN_SOCKET,
    SWARM_REGISTRY,
    SWARM_SOCKET,
    _podman_ready,
    _swarm_ready,
)
from tests.e2e.platform import platform_env, start_platform, wait_health

pytestmark = pytest.mark.corpus

APP = APPS_DIR / "flask-notes"


def env_for(runtime: str, data: Path) -> dict[str, str]:
    extra = {
        "DEVPUSH_RUNTIME": runtime,
        "DEVPUSH_VERIFY_DOMAINS": "false",
        "DEVPUSH_BUILD_TIMEOUT": "900",
        "DEVPUSH_DEPLOY_TIMEOUT": "60",
    }
    if runtime == "docker":
        _podman_ready()
        extra |= {
            "DEVPUSH_DOCKER_HOST": PODMAN_SOCKET,
            "DEVPUSH_RUNNER_IMAGE": "localhost/devpush-runner-python:3.11",
        }
    if runtime == "swarm":
        _swarm_ready()
        extra |= {
            "DEVPUSH_SWARM_HOST": SWARM_SOCKET,
            "DEVPUSH_SWARM_REGISTRY": SWARM_REGISTRY,
            "DEVPUSH_RUNNER_IMAGE": "localhost/devpush-runner-python:3.11",
        }
    return platform_env(data, **extra)


class Platform:
    """A platform that the test restarts: `running` changes, the data directory stays."""

    def __init__(self, runtime: str, data: Path) -> None:
        self.runtime = runtime
        self.running = start_platform(data, env=env_for(runtime, data))
        wait_health(self.running.app_url)
        self.token = self.running.token()

    @property
    def api(self) -> Api:
        return Api(self.running.app_url, self.token, self.running.proxy_url)

    def restart(self) -> None:
        code = self.running.stop()
        assert code == 0, self.running.text()[-3000:]
        self.running = start_platform(self.running.data_dir, env=self.running.env)
        wait_health(self.running.app_url)


def running_on(runtime: str, data: Path) -> Iterator[Platform]:
    """A module's platform on `runtime`, stopped (its containers removed) afterwards."""
    running = Platform(runtime, data)
    yield running
    code = running.running.stop()
    if runtime == "docker":
        running.running.remove_containers()
    if runtime == "swarm":
        running.running.remove_services()
    assert code == 0, running.running.text()[-3000:]


@pytest.fixture(scope="module", params=["process", "docker"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    yield from running_on(request.param, tmp_path_factory.mktemp(f"volumes-{request.param}"))


def notes(api: Api, url: str) -> dict[str, Any]:
    response = api.serve(url.rstrip("/") + "/notes")
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return dict(response.json())


def add_note(api: Api, url: str, body: str) -> None:
    parsed = httpx.URL(url)
    response = httpx.post(
        f"{api.proxy_url}/notes", headers={"Host": parsed.host}, json={"body": body}, timeout=10
    )
    assert response.status_code == 201, response.text


def deploy(api: Api, project_id: str, branch: str = "main") -> dict[str, Any]:
    done = api.wait(api.deploy(project_id, branch=branch)["id"], timeout=600)
    assert done["conclusion"] == "succeeded", (done["error"], done)
    return done


def new_project(api: Api, repo: Path, name: str) -> dict[str, Any]:
    body = {"name": name, "repo_url": f"file://{repo}"}
    return dict(api.post(f"/api/v1/teams/{api.team()}/projects", body, expect=201))


def until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never happened") from None
            time.sleep(0.5)


def test_notes_survive_redeploy_rollback_and_restart(platform: Platform, tmp_path: Path) -> None:
    api = platform.api
    repo = push_app(APP, tmp_path / "notes")
    project = new_project(api, repo, f"notes-{platform.runtime}")
    first = deploy(api, project["id"])
    url = first["urls"]["environment"]
    add_note(api, url, "first")
    assert notes(api, url) == {"release": "v1", "notes": ["first"]}

    app_py = repo / "app.py"
    app_py.write_text(app_py.read_text().replace('RELEASE = "v1"', 'RELEASE = "v2"'))
    commit(repo, "v2", "release v2")
    deploy(api, project["id"])
    assert notes(api, url) == {"release": "v2", "notes": ["first"]}
    add_note(api, url, "second")

    second_id = api.get(f"/api/v1/projects/{project['id']}/deployments")["items"][0]["id"]
    api.post(f"/api/v1/deployments/{second_id}/rollback", expect=200)
    assert notes(api, url) == {"release": "v1", "notes": ["first", "second"]}

    volumes = api.get(f"/api/v1/projects/{project['id']}/volumes")
    [volume] = volumes
    assert (volume["name"], volume["mount_path"]) == ("data", "/data")
    [copy] = volume["copies"]
    assert copy["environment"] == "production" and copy["runtime"] == platform.runtime
    assert copy["used_bytes"] > 0

    platform.restart()
    api = platform.api
    until(lambda: notes(api, url) == {"release": "v1", "notes": ["first", "second"]}, "serving")


def test_previews_other_projects_and_deletion(platform: Platform, tmp_path: Path) -> None:
    api = platform.api
    repo = push_app(APP, tmp_path / "notes")
    project = new_project(api, repo, f"scratch-{platform.runtime}")
    production = deploy(api, project["id"])
    add_note(api, production["urls"]["environment"], "production only")

    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "preview", "a preview")
    preview = deploy(api, project["id"], branch="feature")
    assert notes(api, preview["urls"]["deployment"])["notes"] == []  # an empty scratch copy
    refused = api.http.post(f"/api/v1/deployments/{preview['id']}/promote")
    assert refused.status_code == 409 and "scratch" in refused.text, refused.text

    other_repo = push_app(APP, tmp_path / "other")
    other = new_project(api, other_repo, f"tenant-{platform.runtime}")
    other_url = deploy(api, other["id"])["urls"]["environment"]
    assert notes(api, other_url)["notes"] == []
    assert notes(api, production["urls"]["environment"])["notes"] == ["production only"]

    asked = api.http.delete(f"/api/v1/projects/{project['id']}")
    assert asked.status_code == 409 and "delete_volumes=true" in asked.text, asked.text
    assert notes(api, production["urls"]["environment"])["notes"] == ["production only"]
    gone = api.http.delete(f"/api/v1/projects/{project['id']}", params={"delete_volumes": "true"})
    assert gone.status_code == 202, gone.text

    def volumes_gone() -> None:
        response = api.http.get(f"/api/v1/projects/{other['id']}/volumes")
        assert response.status_code == 200
        assert api.http.get(f"/api/v1/projects/{project['id']}").status_code == 404
        if platform.runtime == "process":
            root = platform.running.data_dir / "volumes"
            assert not (root / project["id"]).exists()
            assert (root / other["id"]).is_dir()
        else:
            engine = httpx.HTTPTransport(uds=PODMAN_SOCKET.removeprefix("unix://"))
            with httpx.Client(transport=engine) as client:
                listed = client.get("http://d/v1.41/volumes").json()
            names = [v["Name"] for v in listed["Volumes"] or []]
            assert not any(project["id"].lower() in n for n in names), names
            assert any(other["id"].lower() in n for n in names), names

    until(volumes_gone, "the deleted project's volumes going")
