"""Scenario 2: the monitor is SIGKILLed while deployments are starting (building, then
starting the app), and restarted. Another monitor takes the deployments over once the dead
one's locks expire: every one still succeeds, and apps keep serving."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.checks import TrafficLoop, wait_until_sound
from tests.chaos.faults import ensure_running, sigkill
from tests.e2e.apps import Api, commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.chaos


def test_monitor_killed_while_deployments_start(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    repos = [make_repo(tmp_path / f"repo{i}", body=f"first {i}") for i in range(4)]
    projects = [
        api.project(repo, f"watched-{i}", build_command="sleep 2", env_vars={"START_DELAY": "2"})
        for i, repo in enumerate(repos)
    ]
    with TrafficLoop(chaos.proxy_url, canary) as loop:
        for round_ in range(2):
            ids = []
            for i, (repo, project) in enumerate(zip(repos, projects, strict=True)):
                commit(repo, f"round {round_} {i}")
                ids.append(api.deploy(project["id"])["id"])
            api.wait_status(ids[0], "deploy", timeout=120)  # building: the monitor watches
            killed = sigkill(chaos, "monitor")
            ensure_running(chaos, "monitor", killed=killed)
            time.sleep(2.5)  # the apps are starting (START_DELAY): kill it again
            killed = sigkill(chaos, "monitor")
            ensure_running(chaos, "monitor", killed=killed)
            for i, deployment_id in enumerate(ids):
                result = api.wait(deployment_id, timeout=180)
                assert result["conclusion"] == "succeeded", (result["error"], result)
                assert api.body(result["urls"]["deployment"]) == f"round {round_} {i}"
        wait_until_sound(chaos, loops=[loop])
