"""Graceful retirement and cancel through a real `devpush up` on both runtimes (issue #18,
missing piece 3): when redeploys retire an instance (two of them: the deployment just replaced
stays warm), its route goes, then it gets SIGTERM; the app finishes the request it was serving
(answered 200 through Traefik, not cut off) and what it prints while shutting down reaches the
deployment's runtime logs. A canceled deployment's running app gets SIGTERM and the grace period
too: a shutdown that takes seconds completes and is logged."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.apps import Api, build_log, commit, git
from tests.e2e.conftest import _running
from tests.e2e.platform import RunningPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# A stdlib server that shuts down the way frameworks do on SIGTERM: it stops accepting, lets
# the requests in flight finish, then exits 0. GET /slow is answered only after SIGTERM (a
# request still in flight when the instance is retired, by construction); GET /unready never
# answers ready. With shutdown_seconds.txt its clean-up takes that long after SIGTERM (only a
# grace period lets it finish).
APP = """\
import os, signal, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = open("body.txt").read().strip()
stopping = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        text, code = BODY, 200
        if self.path == "/unready":
            text, code = "not ready", 503
        if self.path == "/slow":
            print("slow request started", flush=True)
            stopping.wait(120)
            time.sleep(1)
            text = "finished after SIGTERM"
        payload = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight


def on_sigterm(signum, frame):
    if stopping.is_set():
        return
    stopping.set()
    print("received SIGTERM, finishing requests", flush=True)
    threading.Thread(target=server.shutdown).start()


server = Server((os.environ["HOST"], int(os.environ["PORT"])), Handler)
signal.signal(signal.SIGTERM, on_sigterm)
print("serving", flush=True)
server.serve_forever()
server.server_close()
if os.path.exists("shutdown_seconds.txt"):
    time.sleep(float(open("shutdown_seconds.txt").read()))
print("shut down cleanly", flush=True)
"""


@pytest.fixture(scope="module", params=["process", "docker"])
def drain_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp(f"platform-drain-{request.param}")
    # A grace period far longer than the app's shutdown: it must not be waited out.
    yield from _running(
        request.param, data, DEVPUSH_DEPLOY_TIMEOUT="20", DEVPUSH_DRAIN_SECONDS="60"
    )


@pytest.fixture(scope="module")
def api(drain_platform: RunningPlatform) -> Api:
    return Api(drain_platform.app_url, drain_platform.token(), drain_platform.proxy_url)


@pytest.fixture
def project(api: Api, repo: Path) -> Iterator[dict[str, Any]]:
    """The test's project; deleted afterwards, so that its instances do not outlive the test
    (a process runtime's apps outlive `devpush up`)."""
    created = api.project(repo, "drain")
    yield created
    delete_project(api, created["id"])


@pytest.fixture
def unready_project(api: Api, repo: Path) -> Iterator[dict[str, Any]]:
    """A project whose app runs but never answers its health path: a deployment of it stays
    in `deploy`, its app running, until it is canceled (or times out)."""
    created = api.project(repo, "drain-cancel", health_path="/unready")
    yield created
    delete_project(api, created["id"])


def delete_project(api: Api, project_id: str) -> None:
    api.http.delete(f"/api/v1/projects/{project_id}")
    deadline = time.monotonic() + 60
    while api.http.get(f"/api/v1/projects/{project_id}").status_code != 404:
        assert time.monotonic() < deadline, "the project was not deleted"
        time.sleep(0.2)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text(APP)
    return commit(path, "first")


def wait_for_line(api: Api, project_id: str, deployment_id: str, text: str) -> list[str]:
    deadline = time.monotonic() + 40
    while True:
        log = build_log(api, project_id, deployment_id)
        if any(text in line for line in log):
            return log
        assert time.monotonic() < deadline, f"no {text!r} in {log[-20:]}"
        time.sleep(0.2)


def test_a_retired_instance_finishes_its_requests_and_logs_its_shutdown(
    api: Api, repo: Path, project: dict[str, Any]
) -> None:
    first = api.wait(api.deploy(project["id"])["id"])
    assert first["conclusion"] == "succeeded", first
    url = httpx.URL(first["urls"]["deployment"])
    production = first["urls"]["environment"]
    assert api.body(production) == "first"

    answers: list[httpx.Response | BaseException] = []

    def slow_request() -> None:
        try:
            answers.append(
                httpx.get(f"{api.proxy_url}/slow", headers={"Host": url.host}, timeout=150)
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            answers.append(exc)

    in_flight = threading.Thread(target=slow_request)
    in_flight.start()
    wait_for_line(api, project["id"], first["id"], "slow request started")

    # The deployment just replaced stays warm (an instant rollback); the one before it retires.
    for body in ("second", "third"):
        commit(repo, body)
        later = api.wait(api.deploy(project["id"])["id"])
        assert later["conclusion"] == "succeeded", later
    retired_at = time.monotonic()
    in_flight.join(150)
    assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
    assert answers[0].status_code == 200, answers[0].text[:300]
    assert answers[0].text == "finished after SIGTERM"
    assert api.body(production) == "third"

    log = wait_for_line(api, project["id"], first["id"], "shut down cleanly")
    assert "received SIGTERM, finishing requests" in log, log[-20:]
    assert log.count("received SIGTERM, finishing requests") == 1, log[-20:]
    # The app exited after its own shutdown, not after DEVPUSH_DRAIN_SECONDS (60).
    assert time.monotonic() - retired_at < 40


def test_a_canceled_deployment_gets_sigterm_and_the_grace_period(
    api: Api, repo: Path, unready_project: dict[str, Any]
) -> None:
    (repo / "shutdown_seconds.txt").write_text("3\n")
    commit(repo, "a clean-up that takes 3 s")
    deployment = api.deploy(unready_project["id"])
    wait_for_line(api, unready_project["id"], deployment["id"], "serving")
    assert api.get(f"/api/v1/deployments/{deployment['id']}")["status"] == "deploy"

    canceled = api.post(f"/api/v1/deployments/{deployment['id']}/cancel", expect=200)
    assert canceled["conclusion"] == "canceled"
    canceled_at = time.monotonic()

    # SIGTERM, then the app's own 3 s clean-up, then its exit: not a kill on cancel.
    log = wait_for_line(api, unready_project["id"], deployment["id"], "shut down cleanly")
    assert log.count("received SIGTERM, finishing requests") == 1, log[-20:]
    assert time.monotonic() - canceled_at >= 3
    # The app exited after its own shutdown, not after DEVPUSH_DRAIN_SECONDS (60).
    assert time.monotonic() - canceled_at < 40
    assert api.wait(deployment["id"])["conclusion"] == "canceled"
