"""Persistent volumes on the docker runtime, on real Podman: each environment's named volume is
shared by its deployments' containers and outlives them, belongs to the runner user (the app is
not root), and goes with delete_volumes; a preview's is anonymous and goes with its container;
another project's containers see none of it."""

from __future__ import annotations

from collections.abc import Callable

import aiodocker

from devpush.runtime.base import InstanceState, RuntimeHandle, RuntimeSpec, VolumeMount
from devpush.runtime.docker import DockerRuntime
from devpush.runtime.docker_volumes import PREFIX
from tests.integration.runtime_docker.test_docker_runtime import logs_until, wait_for

MakeSpec = Callable[..., RuntimeSpec]
WRITE = (
    'sh -c \'echo "$BODY" >> /data/notes && cat /data/notes && stat -c owner=%u /data/notes'
    " && echo done'"
)


def volume(environment_id: str | None = "envprod") -> VolumeMount:
    return VolumeMount(name="data", mount_path="/data", environment_id=environment_id)


async def run(
    runtime: DockerRuntime, make_spec: MakeSpec, body: str, *volumes: VolumeMount, **fields: object
) -> tuple[RuntimeHandle, list[str]]:
    spec = make_spec(start_command=WRITE, volumes=volumes, **fields)
    spec.env["BODY"] = body
    handle = await runtime.start(await runtime.create(spec))
    status = await wait_for(runtime, handle, InstanceState.exited)
    records = await logs_until(runtime, handle, "done")
    out = [r.message for r in records if r.stream == "stdout"]
    assert status.exit_code == 0, (status, out)
    return handle, out


async def volume_names(podman: str, project_id: str) -> list[str]:
    async with aiodocker.Docker(url=podman) as docker:
        listed = await docker._query_json("volumes")
    return sorted(
        v["Name"] for v in listed.get("Volumes") or [] if v["Name"].startswith(PREFIX + project_id)
    )


async def test_an_environments_volume_is_shared_owned_by_the_runner_and_outlives_containers(
    runtime: DockerRuntime, make_spec: MakeSpec, project_id: str, podman: str
) -> None:
    first, out = await run(runtime, make_spec, "one", volume())
    assert out[:2] == ["one", "owner=10001"], out
    await runtime.remove(first)
    second, out = await run(runtime, make_spec, "two", volume())
    assert out[:2] == ["one", "two"], out
    [usage] = await runtime.volumes(project_id)
    assert (usage.environment_id, usage.name, usage.enforced) == ("envprod", "data", False)
    await runtime.remove(second)
    await runtime.delete_volumes(project_id)
    assert await runtime.volumes(project_id) == []
    assert await volume_names(podman, project_id) == []


async def test_previews_and_other_projects_see_none_of_it(
    runtime: DockerRuntime, make_spec: MakeSpec, project_id: str, podman: str
) -> None:
    await run(runtime, make_spec, "production data", volume())
    preview, out = await run(runtime, make_spec, "pr", volume(None))
    assert out[:1] == ["pr"], out
    await runtime.remove(preview)  # its anonymous volume goes with it
    assert await volume_names(podman, project_id) == [f"{PREFIX}{project_id}-envprod-data"]
    other = f"{project_id}x"
    try:
        _, out = await run(runtime, make_spec, "tenant b", volume(), project_id=other)
        assert out[:1] == ["tenant b"], out
    finally:
        for handle in await runtime.list():
            if handle.data.get("project_id") == other:
                await runtime.remove(handle)
        await runtime.delete_volumes(other)
    for handle in await runtime.list():
        if handle.data.get("project_id") == project_id:
            await runtime.remove(handle)
    await runtime.delete_volumes(project_id)
