"""`devpush update [--full]` on the embedded platform, through the CLI: the versioned upgrade
steps run once each, in order, are recorded and shown by `devpush status`; a failed step stops
the update and the running version keeps serving; `--full` rebuilds the runner images."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.apps.corpus import get, marker
from tests.e2e.apps import Api, create_bare_project, deploy_and_wait, push_app
from tests.e2e.conftest import PODMAN_SOCKET, _podman_ready
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

pytestmark = pytest.mark.e2e


def _step(steps: Path, version: str, script: str) -> None:
    steps.mkdir(parents=True, exist_ok=True)
    reason = f"test step {version}"
    (steps / f"{version}.json").write_text(json.dumps({"reason": reason, "actions": ["script"]}))
    (steps / f"{version}.sh").write_text(script)


def _marks(ran: Path, version: str) -> str:
    return f'echo "{version}" >> {ran}\necho "step {version}: moved the files"\n'


def _cli(running: RunningPlatform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devpush", *args],
        env=running.env,
        capture_output=True,
        text=True,
        timeout=900,  # --full rebuilds the runner images
    )


def _app_pid(running: RunningPlatform) -> int:
    status = running.cli("status", check=False).stdout
    found = re.search(r"\bapp\W+running\W+(\d+)", status)
    assert found, status
    return int(found.group(1))


def _step_states(running: RunningPlatform) -> dict[str, str]:
    status = running.cli("status", check=False)
    return dict(re.findall(r"^\W*(\d+\.\d+\.\d+)\W+(\w+)", status.stdout, re.M))


def test_update_runs_new_steps_once_stops_at_a_failure_and_full_rebuilds_images(
    tmp_path: Path,
) -> None:
    steps, ran = tmp_path / "steps", tmp_path / "ran.txt"
    _step(steps, "1.0.0", _marks(ran, "1.0.0"))  # there when the platform is created
    _podman_ready()
    data = tmp_path / "data"
    env = platform_env(
        data,
        DEVPUSH_UPGRADES_DIR=str(steps),
        DEVPUSH_RUNTIME="docker",
        DEVPUSH_DOCKER_HOST=PODMAN_SOCKET,
        DEVPUSH_RUNNER_IMAGE="localhost/devpush-runner-python:3.11",
        DEVPUSH_VERIFY_DOMAINS="false",
    )
    running = start_platform(data, env=env)
    try:
        wait_health(running.app_url)
        api = Api(running.app_url, running.token(), running.proxy_url)
        app = get("flask-gunicorn")
        project = create_bare_project(api, push_app(app, tmp_path / "repo"), "updated-app")
        live = deploy_and_wait(api, project)
        assert live["conclusion"] == "succeeded", live
        url = live["urls"]["environment"]
        assert marker(app.name) in api.body(url)
        # a new database: the steps of the version that created it are recorded, never run
        assert _step_states(running) == {"1.0.0": "baseline"}
        assert not ran.exists()

        # the next version brings three steps; the middle one fails
        _step(steps, "1.1.0", _marks(ran, "1.1.0"))
        _step(steps, "1.2.0", 'echo "copying the old config"\necho "disk full" >&2\nexit 3\n')
        _step(steps, "1.10.0", _marks(ran, "1.10.0"))
        pid = _app_pid(running)
        failed = _cli(running, "update")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert (
            "error: update stopped: upgrade step 1.2.0 failed: 1.2.0.sh exited with 3: disk full"
            in failed.stderr
        )
        assert "Traceback" not in failed.stderr
        assert ran.read_text().split() == ["1.1.0"]
        # nothing restarted: the same app process serves, and the deployed app too
        assert _app_pid(running) == pid
        assert httpx.get(f"{running.app_url}/health").status_code == 200
        assert marker(app.name) in api.body(url)
        assert _step_states(running) == {
            "1.0.0": "baseline",
            "1.1.0": "applied",
            "1.2.0": "failed",
            "1.10.0": "pending",
        }

        # fixed: --full rebuilds the runner images, runs the rest, restarts the components
        _step(steps, "1.2.0", _marks(ran, "1.2.0"))
        updated = _cli(running, "update", "--full")
        assert updated.returncode == 0, updated.stdout + updated.stderr
        for image in ("python:3.11", "python:3.13", "node:20", "node:22"):  # every runner image
            assert re.search(
                rf"image localhost/devpush-runner-{image}: (up to date|built in)", updated.stderr
            ), updated.stderr
        assert "npm: packing node-linux-" in updated.stderr  # --refresh: the newest of the line
        assert "upgrade step 1.2.0: test step 1.2.0" in updated.stderr
        assert "step 1.10.0: moved the files" in updated.stderr
        assert ran.read_text().split() == ["1.1.0", "1.2.0", "1.10.0"]
        assert _app_pid(running) != pid
        wait_health(running.app_url)
        assert marker(app.name) in api.body(url)  # deployed apps kept serving
        assert set(_step_states(running).values()) == {"baseline", "applied"}
        # the restarted worker deploys
        again = api.deploy(project["id"])
        assert api.wait(again["id"], timeout=600)["conclusion"] == "succeeded"

        # nothing new: nothing runs again
        assert _cli(running, "update").returncode == 0
        assert ran.read_text().split() == ["1.1.0", "1.2.0", "1.10.0"]
    finally:
        code = running.stop()
        running.remove_containers()
    assert code == 0, running.text()[-3000:]
