"""Cron jobs end to end, on both runtimes (issue #20): a job that devpush.toml declares for
every minute runs in the live deployment within about 70 s, with the project's env var and the
environment's volume; its output is found by the logs search, tagged with the job and run, and
its history (status, exit code, duration) shows in the API, as does a run asked for now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.apps import Api, commit, make_repo

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TOML = """\
[[volumes]]
name = "data"
mount_path = "/data"

[[cron]]
name = "tick"
schedule = "* * * * *"
command = "echo ran >> /data/ticks; echo cron-tick-$GREETING-$(wc -l < /data/ticks)"
timeout = 30

[[cron]]
name = "broken"
schedule = "0 0 1 1 *"
command = "echo about to fail; exit 7"
"""


def runs(api: Api, project_id: str, **params: Any) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/projects/{project_id}/cron/runs", **params)["items"])


def wait_run(api: Api, project_id: str, job: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [
            r for r in runs(api, project_id, job=job) if r["status"] not in ("queued", "running")
        ]
        if done:
            return done[-1]
        time.sleep(1)
    raise AssertionError(f"no run of {job} finished in {timeout}s: {runs(api, project_id)}")


def test_a_job_every_minute_runs_and_its_output_is_searchable(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "cron-app")
    (repo / "devpush.toml").write_text(TOML)
    commit(repo, "cron")
    project = api.project(repo, "cron", env_vars={"GREETING": "bonjour"})
    deployment = api.deploy(project["id"])
    done = api.wait(deployment["id"])
    assert done["conclusion"] == "succeeded", done["error"]

    run = wait_run(api, project["id"], "tick", timeout=100)
    assert run["status"] == "succeeded", run
    assert run["exit_code"] == 0 and run["duration"] is not None
    assert run["deployment_id"] == deployment["id"] and run["environment"] == "production"

    found = api.get(f"/api/v1/projects/{project['id']}/logs", q="cron-tick-bonjour")["items"]
    mine = [item for item in found if item["message"].startswith(f"[tick #{run['id'][:8]}] ")]
    assert len(mine) == 1, found  # its output line, tagged with the job and the run
    assert mine[0]["message"] == f"[tick #{run['id'][:8]}] cron-tick-bonjour-1"  # the first
    assert mine[0]["phase"] == "cron" and mine[0]["deployment_id"] == deployment["id"]

    jobs = {j["name"]: j for j in api.get(f"/api/v1/projects/{project['id']}/cron")}
    assert set(jobs) == {"tick", "broken"}
    assert jobs["tick"]["last_run"] is not None and jobs["tick"]["schedule"] == "* * * * *"

    api.post(f"/api/v1/projects/{project['id']}/cron/broken/run", expect=202)
    failed = wait_run(api, project["id"], "broken", timeout=30)
    assert failed["status"] == "failed" and failed["exit_code"] == 7, failed
    said = api.get(f"/api/v1/projects/{project['id']}/logs", q="about to fail")["items"]
    messages = [item["message"] for item in said]
    assert f"[broken #{failed['id'][:8]}] about to fail" in messages, messages
    tag = f"[broken #{failed['id'][:8]}]"
    of_run = api.get(f"/api/v1/projects/{project['id']}/logs", q=tag)["items"]
    assert f"{tag} Exited with code 7 after" in " | ".join(item["message"] for item in of_run)
    the_cli(api, tmp_path, project)


def the_cli(api: Api, tmp_path: Path, project: dict[str, Any]) -> None:
    """`devpush cron list|runs|run` show what the API does; a job it lacks is one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "250"}
    token = api.http.headers["Authorization"].removeprefix("Bearer ")
    assert cli(env, "login", "--url", str(api.http.base_url), "--token", token).returncode == 0
    where = ("--project", project["id"])
    listed = cli(env, "cron", "list", *where, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {j["name"] for j in json.loads(listed.stdout)} == {"tick", "broken"}
    shown = cli(env, "cron", "runs", *where, "--job", "broken")
    assert shown.returncode == 0 and "failed" in shown.stdout, shown.stdout
    queued = cli(env, "cron", "run", "tick", *where, "--json")
    assert queued.returncode == 0 and json.loads(queued.stdout)["job"] == "tick", queued.stderr
    missing = cli(env, "cron", "run", "nope", *where)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "nope" in missing.stderr and len(missing.stderr.strip().splitlines()) <= 2


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devpush", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
