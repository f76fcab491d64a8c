"""Scenario 4: PostgreSQL restarts while deployments are deploying, and again while an app
prints numbered lines. Deployments still succeed, no platform process crashes, and no log line
is lost beyond the shipper's documented buffer (MAX_BUFFER lines, each drop counted in a note
stored with the logs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.checks import TrafficLoop, wait_until_sound
from tests.chaos.faults import assert_no_crash, restart
from tests.chaos.logs import LogFollower, assert_numbered_lines, numbered_repo
from tests.e2e.apps import Api, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.chaos
LINES = 4000


def test_postgres_restart_during_deploys(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    repos = [make_repo(tmp_path / f"repo{i}", body=f"pg {i}") for i in range(3)]
    projects = [
        api.project(repo, f"pg-deploy-{i}", build_command="sleep 3", env_vars={"START_DELAY": "2"})
        for i, repo in enumerate(repos)
    ]
    with TrafficLoop(chaos.proxy_url, canary) as loop, assert_no_crash(chaos):
        ids = [api.deploy(project["id"])["id"] for project in projects]
        for deployment_id in ids:
            api.wait_status(deployment_id, "deploy", timeout=120)
        restart(chaos, "db")
        for i, deployment_id in enumerate(ids):
            result = api.wait(deployment_id, timeout=180)
            assert result["conclusion"] == "succeeded", (result["error"], result)
            assert api.body(result["urls"]["deployment"]) == f"pg {i}"
        wait_until_sound(chaos, loops=[loop])


def test_postgres_restart_during_log_ingestion(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    project = api.project(
        numbered_repo(tmp_path / "repo"),
        "pg-logs",
        env_vars={"LINES": str(LINES), "PAUSE": "0.003"},
    )
    with TrafficLoop(chaos.proxy_url, canary) as loop, assert_no_crash(chaos):
        deployment = api.deploy(project["id"])
        with LogFollower(api, deployment["id"], until="all lines printed") as follower:
            follower.wait_for(300)
            restart(chaos, "db")
        events = follower.result()
        assert api.wait(deployment["id"])["conclusion"] == "succeeded"
        wait_until_sound(chaos, loops=[loop])
    assert_numbered_lines(events, LINES)
    stored = api.get(f"/api/v1/projects/{project['id']}/logs", q="line 3999")["items"]
    assert [e["message"] for e in stored] == ["line 3999"]
