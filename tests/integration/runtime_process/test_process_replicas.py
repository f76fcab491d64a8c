"""Replicas on the process runtime (issue #21): `replicate` copies replica 0's built app into
an instance of its own (its own port and address, no build run again), every replica is listed
with its number, and one stopped leaves the others serving."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from devpush.errors import RuntimeFailure
from devpush.runtime.base import InstanceState, Phase, RuntimeHandle
from devpush.runtime.process import ProcessRuntime
from tests.integration.replica_app import BUILD, REPLICA_APP
from tests.integration.runtime_process.test_process_runtime import (
    all_logs,
    deploy,
    get,
    make_spec,
    wait_exited,
)


@pytest.fixture
def built_source(tmp_path: Path) -> Path:
    directory = tmp_path / "replica-src"
    directory.mkdir()
    (directory / "app.py").write_text(REPLICA_APP)
    return directory


async def test_replicas_run_replica_0s_build_on_ports_of_their_own(
    runtime: ProcessRuntime, built_source: Path
) -> None:
    spec = make_spec(built_source, build_command=BUILD, env={"REPLICA_TAG": "same env"})
    first = await deploy(runtime, spec)
    token, port, tag, link = (await get(first)).text.split("|")
    assert (tag, link) == ("same env", "/bin/sh")
    assert port == first.upstream.rsplit(":", 1)[1]  # type: ignore[union-attr]

    others: list[RuntimeHandle] = []
    for k in (1, 2):
        handle = await runtime.replicate(first, dataclasses.replace(spec, replica=k))
        assert handle.data["replica"] == k and handle.deployment_id == spec.deployment_id
        others.append(await runtime.start(handle))
    answers = [(await get(h)).text.split("|") for h in others]
    # The same build (not run again: it would write another token), each on its own port.
    assert [(a[0], a[3]) for a in answers] == [(token, "/bin/sh")] * 2
    assert len({first.upstream, *(h.upstream for h in others)}) == 3
    logs = await all_logs(runtime, others[0])
    assert not [r for r in logs if r.phase is Phase.build and r.message.startswith("building")]

    listed = {h.id: h for h in await runtime.list()}
    assert {h.data["replica"] for h in listed.values()} == {0, 1, 2}
    assert {h.deployment_id for h in listed.values()} == {spec.deployment_id}

    await runtime.stop(others[0], timeout=1)
    assert (await wait_exited(runtime, others[0])).state is InstanceState.exited
    assert (await get(first)).text.startswith(token)
    assert (await get(others[1])).text.startswith(token)


async def test_replicate_refuses_replica_0_and_a_missing_source(
    runtime: ProcessRuntime, built_source: Path
) -> None:
    spec = make_spec(built_source)
    first = await deploy(runtime, spec)
    with pytest.raises(RuntimeFailure, match="replicas 1 and up"):
        await runtime.replicate(first, spec)
    gone = RuntimeHandle("process", "no-such-instance", "no-such-instance")
    with pytest.raises(RuntimeFailure, match="no app to copy"):
        await runtime.replicate(gone, dataclasses.replace(spec, replica=1))
    with pytest.raises(RuntimeFailure, match="not a valid instance id"):
        await runtime.replicate(
            RuntimeHandle("process", "../etc", "x"), dataclasses.replace(spec, replica=1)
        )
