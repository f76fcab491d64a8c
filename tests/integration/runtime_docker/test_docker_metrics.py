"""The docker runtime's stats on real Podman (its Docker-compatible stats endpoint), and the
sampler storing them for a live deployment's container."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from devpush.db import session_scope
from devpush.deployments.models import Conclusion, Deployment, Status
from devpush.metrics.sampler import Sampler
from devpush.platform import Platform
from devpush.runtime.base import InstanceState, RuntimeSpec
from devpush.runtime.docker import DockerRuntime
from tests.factories.auth import Account
from tests.integration.runtime_docker.test_docker_runtime import get_when_ready, wait_for
from tests.integration.test_metrics import metered_deployment, samples

MakeSpec = Callable[..., RuntimeSpec]


def no_traefik() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(404)))


async def test_stats_of_a_running_container(runtime: DockerRuntime, make_spec: MakeSpec) -> None:
    handle = await runtime.start(await runtime.create(make_spec()))
    await wait_for(runtime, handle, InstanceState.running)
    await get_when_ready(f"http://{handle.upstream}/")
    stats = await runtime.stats(handle)
    assert stats is not None
    assert stats.memory_bytes is not None and 1_000_000 < stats.memory_bytes < 256 * 2**20
    assert stats.cpu_seconds is not None and stats.cpu_seconds > 0
    await runtime.stop(handle, timeout=2)
    await wait_for(runtime, handle, InstanceState.exited)
    assert await runtime.stats(handle) is None  # not running: nothing to report
    await runtime.remove(handle)
    assert await runtime.stats(handle) is None  # gone


async def test_the_sampler_stores_a_live_container(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    runtime: DockerRuntime,
    make_spec: MakeSpec,
) -> None:
    deployment_id = await metered_deployment(client, alice, "boxed")
    spec = dataclasses.replace(make_spec(), deployment_id=deployment_id)
    handle = await runtime.start(await runtime.create(spec))
    await wait_for(runtime, handle, InstanceState.running)
    await get_when_ready(f"http://{handle.upstream}/")
    async with session_scope(platform.sessions) as session:
        row = await session.get(Deployment, deployment_id)
        assert row is not None
        row.status, row.conclusion = Status.completed, Conclusion.succeeded
        row.runtime, row.runtime_handle, row.upstream = "docker", handle.to_json(), handle.upstream
    platform.runtimes._built["docker"] = runtime  # the Podman of these tests
    sampler = Sampler(platform, http=no_traefik())
    start = datetime.now(UTC).replace(microsecond=0)
    assert await sampler.sample(start) == 1
    assert await sampler.sample(start + timedelta(seconds=10)) == 1
    first, second = await samples(platform, deployment_id)
    assert first.memory_bytes is not None and first.memory_bytes > 1_000_000
    assert first.cpu_seconds is not None and first.cpu_seconds > 0
    assert second.cpu_percent is not None and 0 <= second.cpu_percent < 100
    assert (second.requests, second.restarts) == (0, 0)
    await sampler.http.aclose()
