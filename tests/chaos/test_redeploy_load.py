"""Scenario 7: redeploys while about 200 requests a second go to the app through Traefik, on
the docker runtime (Podman): not one request fails, and the traffic moves to the new code."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devpush.runtime import owner_id
from devpush.runtime.docker import DockerRuntime
from tests.chaos.checks import settings_of, wait_until_sound
from tests.chaos.conftest import hostnames, start_chaos_platform, stop_platform
from tests.chaos.load import SteadyLoad
from tests.e2e.apps import Api, commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]
PODMAN_SOCKET = "unix:///run/devpush-podman/podman.sock"
REDEPLOYS = 5


@pytest.fixture(scope="module")
def docker_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    # the docker runtime needs Podman: set it up (idempotent), never skip
    subprocess.run(["bash", str(ROOT / "scripts" / "podman-setup.sh")], check=True, timeout=1200)
    running = start_chaos_platform(
        tmp_path_factory.mktemp("chaos-docker"),
        DEVPUSH_RUNTIME="docker",
        DEVPUSH_DOCKER_HOST=PODMAN_SOCKET,
        DEVPUSH_RUNNER_IMAGE="localhost/devpush-runner-python:3.11",
    )
    owner = owner_id(settings_of(running))
    yield running
    stop_platform(running)
    asyncio.run(remove_containers(owner))  # apps outlive their platform: ours go now


async def remove_containers(owner: str) -> None:
    runtime = DockerRuntime(
        url=PODMAN_SOCKET, network="devpush_runner", default_image="", owner=owner
    )
    try:
        for handle in await runtime.list():
            await runtime.remove(handle)
    finally:
        await runtime.close()


def test_redeploys_under_200_requests_a_second(
    docker_platform: RunningPlatform, tmp_path: Path
) -> None:
    platform = docker_platform
    api = Api(platform.app_url, platform.token(), platform.proxy_url)
    repo = make_repo(tmp_path / "repo", body="v0")
    project = api.project(repo, "loaded")
    first = api.wait(api.deploy(project["id"])["id"], timeout=300)
    assert first["conclusion"] == "succeeded", first
    hosts = [h for h in hostnames(first) if "-id-" not in h]  # the aliases that move
    with SteadyLoad(platform.proxy_url, hosts, tmp_path, rate=200) as load:
        for n in range(1, REDEPLOYS + 1):
            commit(repo, f"v{n}")
            result = api.wait(api.deploy(project["id"])["id"], timeout=300)
            assert result["conclusion"] == "succeeded", (result["error"], result)
            assert api.body(result["urls"]["environment"]) == f"v{n}"
        wait_until_sound(platform)
    print(load.summary())
    assert load.requests > 0, load.output
    assert load.failures == 0, load.summary()
