"""Notifications end to end: a real `devpush up` (process runtime), a webhook channel added with
the client CLI, a deployment whose build fails, and a local receiver that gets
`deployment.failed` signed with the channel's secret; then `notifications test|list|remove`. A
success arrives once, and an event whose delivery waits for a stopped worker arrives, once,
when the worker is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.apps import make_repo
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health
from tests.integration.notifications.receiver import Receiver, receiving, verify

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("notifications") / "data"
    env = platform_env(data, DEVPUSH_RUNTIME="process", DEVPUSH_NOTIFICATIONS_ALLOW_PRIVATE="true")
    running = start_platform(data, env=env)
    wait_health(running.app_url)
    yield running
    running.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devpush", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def test_a_failed_build_is_notified_to_a_webhook(
    platform: RunningPlatform, receiver: Receiver, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["COLUMNS"] = "250"  # the table unwrapped
    login = cli(env, "login", "--url", platform.app_url, "--token", platform.token())
    assert login.returncode == 0, login.stderr
    repo = make_repo(tmp_path / "repo", body="v1")
    created = cli(
        env,
        "projects", "create", "broken", "--repo", f"file://{repo}",
        "--start", "python3 app.py", "--build", "echo building; exit 3",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    refused = cli(
        env, "notifications", "add", "--channel", "webhook", "--url", receiver.url("/hook"),
        "--events", "deployment.exploded",
    )  # fmt: skip
    assert refused.returncode == 6 and "choose from" in refused.stderr
    added = cli(
        env, "notifications", "add", "--channel", "webhook", "--url", receiver.url("/hook"),
        "--events", "deployment.failed,deployment.live", "--project", "broken", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    channel = json.loads(added.stdout)
    secret = channel["secret"]
    assert secret.startswith("whsec_")

    deployed = cli(env, "deploy", "--project", "broken", "--wait", timeout=300)
    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    (hook,) = receiver.wait("/hook", timeout=60)
    assert verify(secret, hook), hook.headers
    body = hook.json()
    assert hook.headers["x-devpush-event"] == body["event"] == "deployment.failed"
    assert hook.headers["x-devpush-delivery"] == body["delivery"]
    assert body["project"]["name"] == "broken"
    assert body["deployment"]["conclusion"] == "failed"
    assert body["url"] == body["deployment"]["urls"]["deployment"]

    tested = cli(env, "notifications", "test", channel["id"])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Test delivered" in tested.stdout
    test_hook = receiver.wait("/hook", count=2)[1]
    assert verify(secret, test_hook) and test_hook.json()["event"] == "test"
    # The failure arrived once: nothing else came before or since.
    assert [r.json()["event"] for r in receiver.at("/hook")] == ["deployment.failed", "test"]

    listed = cli(env, "notifications", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (shown,) = json.loads(listed.stdout)
    assert shown["id"] == channel["id"] and shown["state"] == "ok" and "secret" not in shown
    table = cli(env, "notifications", "list")
    assert channel["id"] in table.stdout and "webhook" in table.stdout
    assert secret not in table.stdout + listed.stdout

    removed = cli(env, "notifications", "remove", channel["id"])
    assert removed.returncode == 0, removed.stderr
    again = cli(env, "notifications", "test", channel["id"])
    assert again.returncode == 4 and "no such notification channel" in again.stderr


def test_a_success_arrives_once_and_a_restarted_worker_loses_no_event(
    platform: RunningPlatform, receiver: Receiver, tmp_path: Path
) -> None:
    """A live deployment is told once; an event whose delivery job waits for a stopped worker
    is delivered, once, when the worker is back."""
    import time

    from tests.e2e.apps import Api

    api = Api(platform.app_url, platform.token(), platform.proxy_url)
    repo = make_repo(tmp_path / "repo", body="fine")
    project = api.project(repo, "fine")
    channel = api.post(
        f"/api/v1/teams/{api.team()}/notifications",
        {
            "channel": "webhook",
            "url": receiver.url("/events"),
            "events": ["deployment.live", "deployment.canceled"],
            "projects": [project["id"]],
        },
        expect=201,
    )
    done = api.wait(api.deploy(project["id"])["id"], timeout=120)
    assert done["conclusion"] == "succeeded", done
    (live,) = receiver.wait("/events", timeout=60)
    assert verify(channel["secret"], live) and live.json()["event"] == "deployment.live"
    assert live.json()["deployment"]["id"] == done["id"]

    stopped = platform.cli("stop", "--components", "worker", check=False)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    try:
        queued = api.deploy(project["id"])  # no worker takes it
        api.post(f"/api/v1/deployments/{queued['id']}/cancel", expect=200)
        time.sleep(3)  # the event is written and its delivery queued, not sent
        assert [r.json()["event"] for r in receiver.at("/events")] == ["deployment.live"]
    finally:
        started = platform.cli("start", "--components", "worker", check=False)
        assert started.returncode == 0, started.stdout + started.stderr
    live_again, canceled = receiver.wait("/events", count=2, timeout=60)
    assert live_again.json() == live.json()
    assert verify(channel["secret"], canceled)
    assert canceled.json()["event"] == "deployment.canceled"
    assert canceled.json()["deployment"]["id"] == queued["id"]
    time.sleep(3)  # nothing arrives twice
    assert len(receiver.at("/events")) == 2
