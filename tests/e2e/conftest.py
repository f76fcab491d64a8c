from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.apps import Api
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

PODMAN_SOCKET = "unix:///run/devpush-podman/podman.sock"
ROOT = Path(__file__).resolve().parents[2]


def _podman_ready() -> None:
    """The docker runtime's tests need Podman; set it up (never skip)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "podman-setup.sh")], check=True, timeout=1200)


@pytest.fixture(scope="module", params=["process", "docker"])
def deploy_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    runtime = request.param
    data = tmp_path_factory.mktemp(f"platform-{runtime}")
    extra = {
        "DEVPUSH_RUNTIME": runtime,
        "DEVPUSH_DEPLOY_TIMEOUT": "20",
        "DEVPUSH_VERIFY_DOMAINS": "false",
    }
    if runtime == "docker":
        _podman_ready()
        extra.update(
            {
                "DEVPUSH_DOCKER_HOST": PODMAN_SOCKET,
                "DEVPUSH_RUNNER_IMAGE": "localhost/devpush-runner-python:3.12",
            }
        )
    running = start_platform(data, env=platform_env(data, **extra))
    wait_health(running.app_url)
    yield running
    code = running.stop()
    if runtime == "docker":
        running.remove_containers()
    assert code == 0, running.text()[-3000:]


@pytest.fixture(scope="module")
def api(deploy_platform: RunningPlatform) -> Api:
    return Api(deploy_platform.app_url, deploy_platform.token(), deploy_platform.proxy_url)


# One cache for every test platform on this machine (kept between CI runs on the same host).
SHARED_CACHE = Path("/var/cache/devpush/test-build-cache")


@pytest.fixture(scope="module", params=["process", "docker"])
def build_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    runtime = request.param
    data = tmp_path_factory.mktemp(f"corpus-{runtime}")
    extra = {
        "DEVPUSH_RUNTIME": runtime,
        "DEVPUSH_BUILD_TIMEOUT": "900",
        "DEVPUSH_DEPLOY_TIMEOUT": "60",
        "DEVPUSH_BUILD_CACHE_DIR": str(SHARED_CACHE),
        # This machine's npm registry serves no signatures, which corepack checks by default.
        "DEVPUSH_BUILD_ENV": '{"COREPACK_INTEGRITY_KEYS": "0"}',
        "DEVPUSH_VERIFY_DOMAINS": "false",
    }
    if runtime == "docker":
        _podman_ready()
        extra |= {
            "DEVPUSH_DOCKER_HOST": PODMAN_SOCKET,
            "DEVPUSH_RUNNER_IMAGE": "localhost/devpush-runner-python:3.11",
        }
    running = start_platform(data, env=platform_env(data, **extra))
    wait_health(running.app_url)
    yield running
    code = running.stop()
    if runtime == "docker":
        running.remove_containers()
    assert code == 0, running.text()[-3000:]


@pytest.fixture(scope="module")
def build_api(build_platform: RunningPlatform) -> Api:
    return Api(build_platform.app_url, build_platform.token(), build_platform.proxy_url)
