"""Scenario 1: the worker is SIGKILLed at random points of start_deployment, 20 times, and
restarted (by the supervisor, or by `devpush start --components worker` once the supervisor
has given up on it). Every deployment concludes, nothing is left behind, apps keep serving,
and deployments go through again afterwards."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.chaos.checks import TrafficLoop, wait_until_sound
from tests.chaos.faults import ensure_running, sigkill, wait_job_started
from tests.e2e.apps import Api, commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.chaos
KILLS = 20


def test_worker_killed_twenty_times(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"random seed {seed}")
    # ten projects, each deployed twice ten rounds apart: most deployments run to their own end
    repos = [make_repo(tmp_path / f"repo{i}", body=f"start {i}") for i in range(10)]
    projects = [
        api.project(repo, f"killed-{i}", build_command="sleep 0.5") for i, repo in enumerate(repos)
    ]
    deployment_ids = []
    with TrafficLoop(chaos.proxy_url, canary) as loop:
        for n in range(KILLS):
            i = n % len(repos)
            commit(repos[i], f"round {n}")
            deployment_ids.append(api.deploy(projects[i]["id"])["id"])
            wait_job_started(chaos, deployment_ids[-1])
            time.sleep(rng.uniform(0, 1.0))
            killed = sigkill(chaos, "worker")
            ensure_running(chaos, "worker", killed=killed)
        wait_until_sound(chaos, loops=[loop])

    outcomes = [api.get(f"/api/v1/deployments/{d}") for d in deployment_ids]
    for outcome in outcomes:
        if outcome["conclusion"] == "failed":
            assert "worker preparing this deployment stopped" in outcome["error"], outcome
        else:
            assert outcome["conclusion"] in ("succeeded", "skipped"), outcome
    print("conclusions:", [o["conclusion"] for o in outcomes])

    assert "worker is left stopped" in chaos.text()  # the supervisor's cap was reached

    # the platform recovered: every project deploys its newest commit again
    again = []
    for i, (repo, project) in enumerate(zip(repos, projects, strict=True)):
        commit(repo, f"after {i}")
        again.append(api.deploy(project["id"])["id"])
    for i, deployment_id in enumerate(again):
        result = api.wait(deployment_id, timeout=180)
        assert result["conclusion"] == "succeeded", (result["error"], result)
        assert api.body(result["urls"]["environment"]) == f"after {i}"
    wait_until_sound(chaos)
