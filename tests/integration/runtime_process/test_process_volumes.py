"""Persistent volumes on the process runtime, against the real machine (bubblewrap, loop
devices, ext4): each environment's copy is shared by its deployments and outlives them and the
runtime, belongs to the project's uid, and holds no more than its size; a preview's copy is
scratch; another project sees none of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devpush.runtime.base import RuntimeHandle, VolumeMount
from devpush.runtime.process import ProcessRuntime
from tests.integration.runtime_process.test_process_runtime import (
    all_logs,
    make_spec,
    wait_exited,
)

# Appends $BODY to the volume's notes, then shows what the app sees there.
WRITE = (
    'sh -c \'echo "$BODY" >> /srv/app/data/notes && cat /srv/app/data/notes'
    " && stat -c owner=%u /srv/app/data/notes'"
)


def volume(environment_id: str | None = "env-prod", size_mb: int | None = None) -> VolumeMount:
    return VolumeMount(
        name="data", mount_path="/srv/app/data", environment_id=environment_id, size_mb=size_mb
    )


async def run(
    runtime: ProcessRuntime, source: Path, command: str, *volumes: VolumeMount, **fields: object
) -> tuple[RuntimeHandle, list[str], int | None]:
    spec = make_spec(source, start_command=command, volumes=volumes, **fields)
    handle = await runtime.start(await runtime.create(spec))
    status = await wait_exited(runtime, handle, timeout=20)
    messages = [r.message for r in await all_logs(runtime, handle) if r.stream == "stdout"]
    return handle, messages, status.exit_code


async def test_an_environments_copy_is_shared_and_outlives_instances_and_the_runtime(
    runtimes: Callable[..., ProcessRuntime], source: Path
) -> None:
    first_runtime = runtimes()
    handle, out, code = await run(first_runtime, source, WRITE, volume(), env={"BODY": "one"})
    assert code == 0 and out[:1] == ["one"], out
    uid = handle.data.get("uid") or first_runtime._uids.get("proj-1")
    assert f"owner={uid}" in out, (out, uid)
    await first_runtime.remove(handle)
    # a new runtime object: what a restarted worker or platform builds
    again = runtimes()
    _, out, code = await run(again, source, WRITE, volume(), env={"BODY": "two"})
    assert code == 0 and out[:2] == ["one", "two"], out
    [usage] = await again.volumes("proj-1")
    assert (usage.environment_id, usage.name) == ("env-prod", "data")
    assert usage.used_bytes > 0 and usage.enforced is False


async def test_previews_and_other_projects_see_none_of_it(
    runtime: ProcessRuntime, source: Path, data_dir: Path
) -> None:
    _, out, _ = await run(runtime, source, WRITE, volume(), env={"BODY": "production data"})
    assert out[:1] == ["production data"]
    preview, out, code = await run(runtime, source, WRITE, volume(None), env={"BODY": "pr"})
    assert code == 0 and out[:1] == ["pr"], out  # an empty scratch copy
    scratch = data_dir / "runtime" / "process" / preview.id / "scratch" / "data"
    assert scratch.is_dir()
    await runtime.remove(preview)
    assert not scratch.exists()  # it went with the instance
    _, out, code = await run(
        runtime,
        source,
        WRITE,
        volume(),
        env={"BODY": "tenant b"},
        project_id="proj-2",
        labels={"devpush.deployment": "d", "devpush.project": "proj-2"},
    )
    assert code == 0 and out[:1] == ["tenant b"], out
    _, out, _ = await run(runtime, source, "ls -A /srv", volume(), env={})
    assert out == ["app"], out  # only the mount; nothing of the host under /srv


async def test_a_sized_volume_is_enforced_by_the_kernel(
    runtime: ProcessRuntime, source: Path
) -> None:
    fill = "sh -c 'dd if=/dev/zero of=/srv/app/data/big bs=1M count=40 2>&1; echo exit=$?'"
    _, out, _ = await run(runtime, source, fill, volume(size_mb=16))
    assert any("No space left on device" in line for line in out), out
    assert out[-1] != "exit=0", out
    [usage] = await runtime.volumes("proj-1")
    assert usage.enforced and usage.size_mb == 16 and usage.used_bytes > 8 * 2**20


async def test_deleting_the_volumes_unmounts_and_removes_them(
    runtime: ProcessRuntime, source: Path, data_dir: Path
) -> None:
    await run(runtime, source, WRITE, volume(size_mb=16), env={"BODY": "x"})
    await run(runtime, source, WRITE, volume("env-staging"), env={"BODY": "y"})
    assert len(await runtime.volumes("proj-1")) == 2
    await runtime.delete_volumes("proj-1")
    assert await runtime.volumes("proj-1") == []
    mounts = Path("/proc/self/mounts").read_text()
    assert str(data_dir) not in mounts
