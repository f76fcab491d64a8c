from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.apps import Api
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

PODMAN_SOCKET = "unix:///run/devpush-podman/podman.sock"
SWARM_SOCKET = "unix:///run/devpush-docker/docker.sock"
SWARM_REGISTRY = "127.0.0.1:5055"  # scripts/swarm-setup.sh's registry
DOCKER = ["/usr/bin/docker", "-H", SWARM_SOCKET]  # Debian's client, for the swarm's dockerd
ROOT = Path(__file__).resolve().parents[2]


def _podman_ready() -> None:
    """The docker runtime's tests need Podman; set it up (never skip)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "podman-setup.sh")], check=True, timeout=1200)


def _swarm_ready() -> None:
    """The swarm runtime's tests need a real swarm (dockerd) with the runner images loaded
    from Podman's; set it up (never skip)."""
    _podman_ready()
    subprocess.run(["bash", str(ROOT / "scripts" / "swarm-setup.sh")], check=True, timeout=1200)


def _running(runtime: str, data: Path, **extra: str) -> Iterator[RunningPlatform]:
    """A real `devpush up` on `runtime` for a test module; its containers go with it."""
    extra |= {"DEVPUSH_RUNTIME": runtime, "DEVPUSH_VERIFY_DOMAINS": "false"}
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


@pytest.fixture(scope="module", params=["process", "docker"])
def deploy_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp(f"platform-{request.param}")
    yield from _running(request.param, data, DEVPUSH_DEPLOY_TIMEOUT="20")


@pytest.fixture(scope="module")
def api(deploy_platform: RunningPlatform) -> Api:
    return Api(deploy_platform.app_url, deploy_platform.token(), deploy_platform.proxy_url)


@pytest.fixture(scope="module", params=["process", "docker"])
def build_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    """A platform for real builds: their time limits. Package caches are per project (no
    cache outside the platform's data directory: each test's project is a new one)."""
    data = tmp_path_factory.mktemp(f"corpus-{request.param}")
    yield from _running(
        request.param,
        data,
        DEVPUSH_BUILD_TIMEOUT="900",
        DEVPUSH_DEPLOY_TIMEOUT="60",
        # This machine's npm registry serves no signatures, which corepack checks by default.
        DEVPUSH_BUILD_ENV='{"COREPACK_INTEGRITY_KEYS": "0"}',
    )


@pytest.fixture(scope="module")
def build_api(build_platform: RunningPlatform) -> Api:
    return Api(build_platform.app_url, build_platform.token(), build_platform.proxy_url)
