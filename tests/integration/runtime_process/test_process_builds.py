"""The process runtime's build stage: its own sandbox and cgroup (the build's memory limit,
not the app's), the shared cache and tools under /devpush, and the ports an app listens on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devpush.runtime.base import InstanceState, Phase, RuntimeSpec
from devpush.runtime.process import ProcessRuntime
from tests.integration.runtime_process.conftest import APP
from tests.integration.runtime_process.test_process_runtime import (
    all_logs,
    get,
    lines,
    wait_exited,
)

HOG = "python3 -c 'b = bytearray({mb} * 1024 * 1024); print(\"held\", len(b), flush=True)'"


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool-ran\n")
    tool.chmod(0o755)
    made = ProcessRuntime(
        root=tmp_path / "data" / "runtime" / "process",
        protected_paths=[tmp_path / "data"],
        allow_unsandboxed=False,
        cache_dir=tmp_path / "data" / "cache",
        trees_dir=tmp_path / "data" / "trees",
        tools={"bin/tool": tool},
    )
    yield made
    for handle in await made.list():
        await made.remove(handle)


def spec(source: Path, **fields: object) -> RuntimeSpec:
    values: dict[str, object] = {
        "deployment_id": f"dep-{uuid.uuid4().hex[:12]}",
        "project_id": "proj-1",
        "source_dir": source,
        "start_command": "python3 app.py",
    }
    values.update(fields)
    return RuntimeSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "app.py").write_text(APP)
    return directory


async def test_the_build_has_its_own_memory_limit(runtime: ProcessRuntime, source: Path) -> None:
    """A build that needs 300 MiB passes under a 512 MiB build limit while the app's is 64."""
    handle = await runtime.start(
        await runtime.create(
            spec(
                source,
                build_command=HOG.format(mb=300),
                memory_mb=64,
                build_memory_mb=512,
                env={"BODY": "built"},
            )
        )
    )
    assert (await get(handle)).text == "built"
    held = [m for p, m in lines(await all_logs(runtime, handle), "stdout") if p is Phase.build]
    assert f"held {300 * 1024 * 1024}" in held


async def test_a_build_over_its_limit_names_the_setting(
    runtime: ProcessRuntime, source: Path
) -> None:
    handle = await runtime.start(
        await runtime.create(
            spec(source, build_command=HOG.format(mb=400), memory_mb=512, build_memory_mb=96)
        )
    )
    status = await wait_exited(runtime, handle, timeout=60)
    assert status.state is InstanceState.exited and status.phase is Phase.build
    assert status.error and "the build's limit is 96 MiB" in status.error
    assert "DEVPUSH_BUILD_MEMORY_MB" in status.error


async def test_builds_share_the_cache_and_see_the_tools(
    runtime: ProcessRuntime, source: Path
) -> None:
    first = await runtime.start(
        await runtime.create(
            spec(
                source,
                install_command="echo cached > /devpush/cache/marker && /devpush/bin/tool",
                env={"BODY": "one"},
            )
        )
    )
    assert (await get(first)).text == "one"
    out = [m for p, m in lines(await all_logs(runtime, first), "stdout") if p is Phase.build]
    assert "tool-ran" in out and any(m.startswith("devpush: install took ") for m in out)
    second = await runtime.start(
        await runtime.create(spec(source, install_command="cat /devpush/cache/marker"))
    )
    await get(second)
    out = [m for p, m in lines(await all_logs(runtime, second), "stdout") if p is Phase.build]
    assert "cached" in out


async def test_a_failed_build_never_starts_the_app(runtime: ProcessRuntime, source: Path) -> None:
    handle = await runtime.start(
        await runtime.create(spec(source, install_command="echo broken >&2; exit 7"))
    )
    status = await wait_exited(runtime, handle)
    assert (status.phase, status.exit_code) == (Phase.build, 7)
    records = await all_logs(runtime, handle)
    assert not [r for r in records if r.phase is Phase.runtime]


async def test_listening_names_the_port_an_app_chose(runtime: ProcessRuntime, source: Path) -> None:
    (source / "app.py").write_text(APP.replace('int(os.environ["PORT"])', "int(os.environ['OWN'])"))
    own = 23000 + uuid.uuid4().int % 1000
    handle = await runtime.start(await runtime.create(spec(source, env={"OWN": str(own)})))
    for _ in range(200):
        if own in await runtime.listening(handle):
            break
        await asyncio.sleep(0.05)
    assert await runtime.listening(handle) == [own]
    assert handle.upstream and int(handle.upstream.rsplit(":", 1)[1]) != own


async def test_an_unchanged_lockfile_restores_the_kept_tree_of_its_project(
    runtime: ProcessRuntime, source: Path
) -> None:
    install = "mkdir -p .venv && echo installing && echo built > .venv/marker"
    key = "0123456789abcdef0123456789abcdef:.venv"
    check = "cat .venv/marker"

    async def build_output(project_id: str) -> list[str]:
        handle = await runtime.start(
            await runtime.create(
                spec(
                    source,
                    project_id=project_id,
                    install_command=install,
                    install_cache=key,
                    build_command=check,
                )
            )
        )
        await get(handle)
        records = await all_logs(runtime, handle)
        await runtime.remove(handle)
        return [m for p, m in lines(records, "stdout") if p is Phase.build]

    first = await build_output("proj-1")
    assert "installing" in first and "built" in first
    second = await build_output("proj-1")
    assert "installing" not in second and "built" in second
    assert "devpush: .venv restored from the cache: the lockfile did not change" in second
    other = await build_output("proj-2")  # another project never sees proj-1's trees
    assert "installing" in other
    await runtime.forget_project("proj-1")
    assert "installing" in await build_output("proj-1")
