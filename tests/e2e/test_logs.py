"""Logs end to end through a real `devpush up` (process runtime): a build printing 1,000
numbered lines and an app printing 1,000 more reach the SSE stream complete, in order and
without duplicates; a reconnect with Last-Event-ID continues exactly; search finds them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.apps import OK_SERVER, Api, commit, git
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

pytestmark = pytest.mark.e2e

N = 1000
BUILD = f"""\
for i in range({N}):
    print(f"build {{i}}")
"""
APP = (
    f"""\
import sys

for i in range({N}):
    print(f"app {{i}}")
sys.stdout.flush()
"""
    + OK_SERVER
)


@pytest.fixture(scope="module")
def logs_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("platform-logs")
    env = platform_env(data, DEVPUSH_RUNTIME="process", DEVPUSH_DEPLOY_TIMEOUT="30")
    running = start_platform(data, env=env)
    wait_health(running.app_url)
    yield running
    code = running.stop()
    assert code == 0, running.text()[-3000:]


@pytest.fixture(scope="module")
def api(logs_platform: RunningPlatform) -> Api:
    return Api(logs_platform.app_url, logs_platform.token(), logs_platform.proxy_url)


@pytest.fixture(scope="module")
def chatty_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("chatty") / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "build.py").write_text(BUILD)
    (repo / "app.py").write_text(APP)
    return commit(repo, "chatty")


def read_events(
    api: Api,
    deployment_id: str,
    *,
    until: str,
    last_event_id: str | None = None,
    stop_after: int = 0,
) -> list[dict[str, Any]]:
    """Log events of the deployment's SSE stream up to the line `until` (or `stop_after` log
    events), as dicts with the event id."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    seen: list[dict[str, Any]] = []
    event: dict[str, str] = {}
    with api.http.stream(
        "GET",
        f"/api/v1/deployments/{deployment_id}/events",
        headers=headers,
        timeout=httpx.Timeout(10, read=90),
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(":")
                event[name] = value[1:] if value.startswith(" ") else value
                continue
            if event.get("event") == "log":
                seen.append({**json.loads(event["data"]), "id": event.get("id")})
                if seen[-1]["message"] == until or len(seen) == stop_after:
                    return seen
            assert event.get("event") != "end", event
            event = {}
    raise AssertionError("the stream closed early")


def test_two_thousand_lines_arrive_in_order_without_duplicates(api: Api, chatty_repo: Path) -> None:
    project = api.project(chatty_repo, "chatty", build_command="python3 build.py")
    deployment = api.deploy(project["id"])
    # connected at once: the lines arrive live while the build and the app print them
    events = read_events(api, deployment["id"], until=f"app {N - 1}")
    ids = [int(e["id"]) for e in events]
    assert ids == [e["seq"] for e in events]
    assert ids == list(range(1, len(ids) + 1)), "a line is missing or repeated"
    # the build's own lines; the entrypoint's timings ("devpush: build took 0.21s") aside
    build = [e for e in events if e["phase"] == "build" and not e["message"].startswith("devpush:")]
    app = [e for e in events if e["phase"] == "runtime"]
    assert [e["message"] for e in build] == [f"build {i}" for i in range(N)]
    assert [e["message"] for e in app] == [f"app {i}" for i in range(N)]
    assert all(e["stream"] == "stdout" and e["deployment_id"] == deployment["id"] for e in app)
    assert any(e["phase"] == "system" for e in events)
    assert api.wait(deployment["id"])["conclusion"] == "succeeded"


def test_reconnect_with_last_event_id_continues_exactly(api: Api, chatty_repo: Path) -> None:
    project = api.project(chatty_repo, "chatty-again", build_command="python3 build.py")
    deployment = api.deploy(project["id"])
    first = read_events(api, deployment["id"], until="", stop_after=700)
    rest = read_events(api, deployment["id"], until=f"app {N - 1}", last_event_id=first[-1]["id"])
    assert int(rest[0]["id"]) == int(first[-1]["id"]) + 1
    both = first + rest
    assert [int(e["id"]) for e in both] == list(range(1, len(both) + 1))
    assert [e["message"] for e in both if e["phase"] == "runtime"] == [f"app {i}" for i in range(N)]
    found = api.get(f"/api/v1/projects/{project['id']}/logs", q="app 999")["items"]
    assert [(e["message"], e["deployment_id"]) for e in found] == [("app 999", deployment["id"])]
