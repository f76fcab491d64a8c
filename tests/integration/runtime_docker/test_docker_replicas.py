"""Replicas on the docker runtime against real Podman (issue #21): `replicate` copies replica 0's
built /app into a container of its own (no build run again), every replica is listed with its
number, and one stopped leaves the others serving."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from devpush.errors import RuntimeFailure
from devpush.runtime.base import InstanceState, Phase, RuntimeHandle
from devpush.runtime.docker import DockerRuntime
from tests.integration.replica_app import BUILD, REPLICA_APP
from tests.integration.runtime_docker.test_docker_runtime import (
    MakeSpec,
    all_logs,
    get_when_ready,
    wait_for,
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    source = tmp_path / "replica-src"
    source.mkdir()
    (source / "app.py").write_text(REPLICA_APP)
    return source


async def test_replicas_run_replica_0s_build_in_containers_of_their_own(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(build_command=BUILD, env={"PORT": "8000", "REPLICA_TAG": "same env"})
    first = await runtime.start(await runtime.create(spec))
    await wait_for(runtime, first, InstanceState.running)
    token, port, tag, link = (await get_when_ready(f"http://{first.upstream}/")).text.split("|")
    assert (port, tag, link) == ("8000", "same env", "/bin/sh")

    others: list[RuntimeHandle] = []
    for k in (1, 2):
        handle = await runtime.replicate(first, dataclasses.replace(spec, replica=k))
        assert handle.data["replica"] == k and handle.deployment_id == spec.deployment_id
        assert handle.data["name"] == f"devpush-{spec.deployment_id}-r{k}"
        others.append(await runtime.start(handle))
    answers = [(await get_when_ready(f"http://{h.upstream}/")).text for h in others]
    # the same build (not run again), its absolute link kept as it is
    assert answers == [f"{token}|8000|same env|/bin/sh"] * 2
    assert len({first.upstream, *(h.upstream for h in others)}) == 3
    logs = await all_logs(runtime, others[0])
    assert not [r for r in logs if r.phase is Phase.build and r.message == "building"]

    listed = [h for h in await runtime.list() if h.deployment_id == spec.deployment_id]
    assert sorted(h.data["replica"] for h in listed) == [0, 1, 2]

    await runtime.stop(others[0], timeout=1)
    await wait_for(runtime, others[0], InstanceState.exited)
    assert (await get_when_ready(f"http://{first.upstream}/")).text.startswith(token)
    assert (await get_when_ready(f"http://{others[1].upstream}/")).text.startswith(token)


async def test_replicate_refuses_replica_0_and_a_missing_source(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec()
    first = await runtime.create(spec)
    with pytest.raises(RuntimeFailure, match="replicas 1 and up"):
        await runtime.replicate(first, spec)
    gone = RuntimeHandle("docker", "0" * 64, spec.deployment_id)
    with pytest.raises(RuntimeFailure, match="missing"):
        await runtime.replicate(gone, dataclasses.replace(spec, replica=1))
