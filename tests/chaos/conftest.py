"""One real platform (process runtime) shared by the chaos scenarios that leave it whole, and a
canary app deployed on it: every scenario requests the canary through Traefik during its fault
and expects no failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.apps import Api, make_repo
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

CHAOS_ENV = {
    "DEVPUSH_RUNTIME": "process",
    "DEVPUSH_DEPLOY_TIMEOUT": "60",
    "DEVPUSH_VERIFY_DOMAINS": "false",
    "DEVPUSH_API_RATE_LIMIT": "0",
}


def start_chaos_platform(data: Path, **extra: str) -> RunningPlatform:
    running = start_platform(data, env=platform_env(data, **{**CHAOS_ENV, **extra}), timeout=240)
    wait_health(running.app_url, timeout=60)
    return running


def stop_platform(running: RunningPlatform) -> None:
    code = running.stop(timeout=120)
    assert code == 0, running.text()[-3000:]


@pytest.fixture(scope="package")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_chaos_platform(tmp_path_factory.mktemp("chaos-platform"))
    yield running
    stop_platform(running)


@pytest.fixture(scope="package")
def api(chaos: RunningPlatform) -> Api:
    return Api(chaos.app_url, chaos.token(), chaos.proxy_url)


def hostnames(deployment: dict[str, object]) -> list[str]:
    urls = deployment["urls"]
    assert isinstance(urls, dict)
    return [httpx.URL(url).host for url in urls.values()]


@pytest.fixture(scope="package")
def canary(api: Api, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Hostnames of an app that serves through every fault."""
    repo = make_repo(tmp_path_factory.mktemp("canary") / "repo", body="canary")
    project = api.project(repo, "canary")
    deployment = api.wait(api.deploy(project["id"])["id"], timeout=180)
    assert deployment["conclusion"] == "succeeded", deployment
    return hostnames(deployment)
