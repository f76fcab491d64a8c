"""Scenario 3: Redis restarts while deployments build, and again while a client follows a
deployment's live log stream. Builds still succeed; the client, reconnecting with
Last-Event-ID, receives every line exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.checks import TrafficLoop, wait_until_sound
from tests.chaos.faults import assert_no_crash, restart
from tests.chaos.logs import LogFollower, assert_numbered_lines, numbered_repo
from tests.e2e.apps import Api, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.chaos
LINES = 3000


def test_redis_restart_during_builds(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    repos = [make_repo(tmp_path / f"repo{i}", body=f"built {i}") for i in range(3)]
    projects = [
        api.project(repo, f"redis-build-{i}", build_command="echo building; sleep 4; echo built")
        for i, repo in enumerate(repos)
    ]
    with TrafficLoop(chaos.proxy_url, canary) as loop, assert_no_crash(chaos):
        ids = [api.deploy(project["id"])["id"] for project in projects]
        for deployment_id in ids:
            api.wait_status(deployment_id, "deploy", timeout=120)
        restart(chaos, "redis")
        for i, deployment_id in enumerate(ids):
            result = api.wait(deployment_id, timeout=180)
            assert result["conclusion"] == "succeeded", (result["error"], result)
            assert api.body(result["urls"]["deployment"]) == f"built {i}"
        wait_until_sound(chaos, loops=[loop])


def test_redis_restart_during_live_logs(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    project = api.project(
        numbered_repo(tmp_path / "repo"),
        "redis-logs",
        env_vars={"LINES": str(LINES), "PAUSE": "0.005"},
    )
    with TrafficLoop(chaos.proxy_url, canary) as loop, assert_no_crash(chaos):
        deployment = api.deploy(project["id"])
        with LogFollower(api, deployment["id"], until="all lines printed") as follower:
            follower.wait_for(300)
            restart(chaos, "redis")
        events = follower.result()
        print(f"the log stream reconnected {follower.reconnects} times")
        assert api.wait(deployment["id"])["conclusion"] == "succeeded"
        wait_until_sound(chaos, loops=[loop])
    assert_numbered_lines(events, LINES)
