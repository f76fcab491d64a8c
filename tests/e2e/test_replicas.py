"""Replicas end to end, on both runtimes (issue #21): a Flask app whose devpush.toml asks for
three replicas goes live with all three behind Traefik, which spreads requests across them; one
killed under a steady 50 req/s loses no request but the one it was answering, and is replaced;
scaling 3 -> 1 -> 2 (the API, then `devpush scale web=2`) changes what serves without a
redeploy, while it serves."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.apps.corpus import APPS_DIR
from tests.e2e.apps import Api, push_app
from tests.e2e.test_volumes import Platform, deploy, new_project, running_on, until

pytestmark = pytest.mark.corpus

APP = APPS_DIR / "flask-replicas"
RATE = 50  # requests per second of the steady load


@pytest.fixture(scope="module", params=["process", "docker"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    yield from running_on(request.param, tmp_path_factory.mktemp(f"replicas-{request.param}"))


@dataclass
class Live:
    platform: Platform
    project: dict[str, Any]
    deployment: dict[str, Any]

    @property
    def api(self) -> Api:
        return self.platform.api

    @property
    def url(self) -> str:
        return str(self.deployment["urls"]["environment"])

    def whoami(self) -> str:
        response = self.api.serve(self.url.rstrip("/") + "/whoami")
        assert response.status_code == 200, (response.status_code, response.text[:300])
        return str(response.json()["instance"])

    def serving(self, n: int) -> Counter[str]:
        return Counter(self.whoami() for _ in range(n))

    def replicas(self) -> int:
        return int(self.api.get(f"/api/v1/deployments/{self.deployment['id']}")["replicas"])


@pytest.fixture(scope="module")
def live(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Live:
    return deploy_three(platform, tmp_path_factory)


def deploy_three(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Live:
    """The app deployed with its devpush.toml's three replicas."""
    api = platform.api
    repo = push_app(APP, tmp_path_factory.mktemp("replicas-repo") / "app")
    project = new_project(api, repo, f"replicas-{platform.runtime}")
    deployment = deploy(api, project["id"])
    assert deployment["replicas"] == 3, deployment
    return Live(platform, project, deployment)


@dataclass
class Load:
    """A steady stream of GET /whoami through Traefik (one at a time), each answer recorded,
    each failure with the time its request started and ended."""

    live: Live
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    failed: list[tuple[float, float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def failures(self) -> list[str]:
        return [message for _, _, message in self.failed]

    def lost_beyond(self, kill: tuple[float, float]) -> list[str]:
        """The failures besides the one request in flight on the instance when it was killed
        (somewhere in `kill`, the start and end of the kill command): Traefik retries a request
        only until it was sent, so no proxy of this kind (nor Render's or Heroku's) saves the
        request a SIGKILLed app was answering."""
        spared = [f for f in self.failed if f[0] <= kill[1] and f[1] >= kill[0]][:1]
        return [f[2] for f in self.failed if f not in spared]

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        parsed = httpx.URL(self.live.url)
        with httpx.Client(base_url=self.live.api.proxy_url, timeout=10) as client:
            start = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    response = client.get("/whoami", headers={"Host": parsed.host})
                    instance = response.json()["instance"] if response.status_code == 200 else ""
                    self.answers.append((time.monotonic(), response.status_code, instance))
                    if response.status_code != 200:
                        message = f"HTTP {response.status_code}: {response.text[:200]}"
                        self.failed.append((began, time.monotonic(), message))
                except (httpx.HTTPError, ValueError) as exc:
                    self.failed.append((began, time.monotonic(), repr(exc)))
                sent += 1
                time.sleep(max(0.0, start + sent / RATE - time.monotonic()))


def kill_replica(live: Live, replica: int) -> None:
    """SIGKILL one replica's app from outside, as the kernel's OOM killer would."""
    deployment_id = live.deployment["id"]
    if live.platform.runtime == "docker":
        name = f"devpush-{deployment_id}-r{replica}"
        subprocess.run(["podman", "kill", "--signal", "KILL", name], check=True)
        return
    root = live.platform.running.data_dir / "runtime" / "process" / f"{deployment_id}-r{replica}"
    pid = json.loads((root / "instance.json").read_text())["pid"]
    tree = psutil.Process(pid)
    for proc in [tree, *tree.children(recursive=True)]:
        with contextlib.suppress(ProcessLookupError):  # gone with its parent already
            os.kill(proc.pid, signal.SIGKILL)


def scale_cli(live: Live, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`devpush scale ARGS --project P`, logged in through the environment."""
    devpush = Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "devpush"
    return subprocess.run(
        [str(devpush), "scale", *args, "--project", live.project["name"]],
        env={
            **os.environ,
            "DEVPUSH_URL": live.platform.running.app_url,
            "DEVPUSH_TOKEN": live.platform.token,
            "HOME": str(home),
        },
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_requests_spread_across_the_three_replicas(live: Live) -> None:
    seen = live.serving(60)
    assert len(seen) == 3, seen
    assert min(seen.values()) >= 10, seen  # balanced, not one taking nearly all

    def tagged() -> set[int]:
        lines = live.api.get(
            f"/api/v1/projects/{live.project['id']}/logs",
            deployment=live.deployment["id"],
            q="Listening at",
            limit=100,
        )["items"]
        replicas = {line["replica"] for line in lines}
        assert replicas == {0, 1, 2}, lines
        return replicas

    until(tagged, "each replica's start-up line, tagged with its replica", timeout=60)


def test_a_killed_replica_loses_no_request_and_is_replaced(live: Live) -> None:
    before = set(live.serving(30))
    assert len(before) == 3
    with Load(live) as load:
        time.sleep(2)
        kill_started = time.monotonic()
        kill_replica(live, 1)
        kill = (kill_started, time.monotonic())
        time.sleep(8)
    assert load.lost_beyond(kill) == [], load.failures[:5]
    assert len(load.answers) >= 2 * RATE, len(load.answers)  # the load ran throughout
    # Replaced: three serve again, one of them new (a new port, or a new container).
    after = until(lambda: _three(live), "the killed replica's replacement serving", timeout=120)
    assert len(after - before) >= 1, (before, after)
    log = live.api.get(
        f"/api/v1/projects/{live.project['id']}/logs",
        deployment=live.deployment["id"],
        q="Replica 1:",
    )
    messages = [line["message"] for line in log["items"]]
    assert any(m.startswith("Replica 1: ") and "in its place" in m for m in messages), messages


def _three(live: Live) -> set[str]:
    assert live.replicas() == 3
    seen = set(live.serving(30))
    assert len(seen) == 3, seen
    return seen


def test_scaling_3_to_1_to_2_while_serving(live: Live, tmp_path: Path) -> None:
    api = live.api
    scale_url = f"/api/v1/projects/{live.project['id']}/environments/production/scale"
    with Load(live) as load:
        answer = api.post(scale_url, {"replicas": 1}, expect=202)
        assert answer["deployment_id"] == live.deployment["id"]
        until(lambda: _count(live, 1), "scaled down to one replica", timeout=120)
        cli = scale_cli(live, tmp_path, "web=2", "--timeout", "180")
        assert cli.returncode == 0, cli.stderr
        assert "2 replicas" in cli.stdout and "2 of 2 replicas serving" in cli.stderr
        until(lambda: _count(live, 2), "scaled up to two replicas", timeout=120)
    assert load.failures == [], load.failures[:5]
    assert api.get(f"/api/v1/deployments/{live.deployment['id']}")["conclusion"] == "succeeded"
    assert len(api.get(f"/api/v1/projects/{live.project['id']}/deployments")["items"]) == 1


def _count(live: Live, n: int) -> None:
    assert live.replicas() == n
    assert len(set(live.serving(20))) == n


def test_bad_scale_input_is_refused_in_one_line(live: Live, tmp_path: Path) -> None:
    cli = scale_cli(live, tmp_path, "worker=2")
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert "web=N" in cli.stderr and "Traceback" not in cli.stderr
