"""A live app that exits, through a real `devpush up` on both runtimes: it is restarted and
serves again through Traefik; an app that exits at every start ends `crashed` (exit code, last
log lines) and its URL answers 503. Small restart backoffs keep it short."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.apps import Api, build_log, commit, git
from tests.e2e.conftest import _running
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.e2e

# GET /exit?code=N answers, then exits with N; with &sticky=1 it first leaves a file that makes
# every later start exit with N at once (a crash loop).
APP = """\
import os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

if os.path.exists("sticky"):
    code = int(open("sticky").read())
    print(f"still broken: exiting with {code}", flush=True)
    sys.exit(code)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        body = b"alive"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if url.path == "/exit":
            code = int(query["code"][0])
            if query.get("sticky"):
                with open("sticky", "w") as f:
                    f.write(str(code))
            print(f"exiting with {code}", flush=True)
            threading.Timer(0.1, os._exit, [code]).start()

    def log_message(self, *args):
        pass


print("serving", flush=True)
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(scope="module", params=["process", "docker"])
def crash_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp(f"platform-crash-{request.param}")
    yield from _running(
        request.param,
        data,
        DEVPUSH_DEPLOY_TIMEOUT="20",
        DEVPUSH_RESTART_BACKOFF_MIN="0.2",
        DEVPUSH_RESTART_BACKOFF_MAX="0.5",
        DEVPUSH_RESTART_MAX_CRASHES="3",
    )


@pytest.fixture(scope="module")
def api(crash_platform: RunningPlatform) -> Api:
    return Api(crash_platform.app_url, crash_platform.token(), crash_platform.proxy_url)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crashing") / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text(APP)
    return commit(path, "crashing")


def wait_for(api: Api, deployment_id: str, health: str | None, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = dict(api.get(f"/api/v1/deployments/{deployment_id}"))
        if deployment["instance_health"] == health:
            return deployment
        time.sleep(0.05)
    raise AssertionError(f"{deployment_id} never read instance_health={health}: {deployment}")


def test_an_exited_app_is_restarted_then_a_crash_loop_ends_crashed(api: Api, repo: Path) -> None:
    project = api.project(repo, "phoenix")
    deployment = api.wait(api.deploy(project["id"])["id"])
    assert deployment["conclusion"] == "succeeded", deployment
    url = deployment["urls"]["deployment"]
    assert api.body(url) == "alive"

    api.serve(str(httpx.URL(url).join("/exit?code=3")))
    wait_for(api, deployment["id"], "restarting", timeout=10)
    wait_for(api, deployment["id"], None)
    assert api.body(url) == "alive"  # through Traefik, to the restarted instance
    log = build_log(api, project["id"], deployment["id"])
    assert any("exited with code 3; restarting in" in line for line in log), log[-20:]

    api.serve(str(httpx.URL(url).join("/exit?code=4&sticky=1")))
    crashed = wait_for(api, deployment["id"], "crashed")
    assert crashed["exit_code"] == 4 and crashed["conclusion"] == "succeeded"
    deadline = time.monotonic() + 10  # the exit's own lines once the shipper stored them
    while not any("exiting with 4" in line for line in crashed["crash_log"]):
        assert time.monotonic() < deadline, crashed["crash_log"]
        time.sleep(0.1)
        crashed = dict(api.get(f"/api/v1/deployments/{deployment['id']}"))
    answer = api.serve(url)
    assert answer.status_code == 503 and "App crashed" in answer.text
    refused = httpx.post(
        f"{str(api.http.base_url).rstrip('/')}/api/v1/deployments/{deployment['id']}/promote",
        headers=api.http.headers,
    )
    assert refused.status_code == 409 and "crashed" in refused.text
