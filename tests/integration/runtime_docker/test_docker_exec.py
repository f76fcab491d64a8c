"""One-off commands (cron jobs) in a running docker-runtime container, on real Podman: an
Engine API exec as the runner user in /app, with the spec's env, the plan's PATH entries and
the environment's volume; output line by line, exit codes kept, a timeout kills the command
and what it started while the app keeps serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from devpush.runtime.base import (
    ExecResult,
    InstanceState,
    RuntimeHandle,
    RuntimeSpec,
    VolumeMount,
)
from devpush.runtime.docker import DockerRuntime
from tests.integration.runtime_docker.test_docker_runtime import logs_until, wait_for

MakeSpec = Callable[..., RuntimeSpec]
VOLUME = VolumeMount(name="data", mount_path="/data", environment_id="envprod")


async def run(
    runtime: DockerRuntime,
    handle: RuntimeHandle,
    spec: RuntimeSpec,
    command: str,
    timeout: float = 20.0,
) -> tuple[ExecResult, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    async def output(stream: str, line: str) -> None:
        seen.append((stream, line))

    result = await runtime.exec(handle, spec, command, timeout=timeout, output=output)
    return result, seen


async def live(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> tuple[RuntimeHandle, RuntimeSpec]:
    (app_dir / "bin").mkdir()
    (app_dir / "bin" / "planned-tool").write_text("#!/bin/sh\necho planned tool ran\n")
    (app_dir / "bin" / "planned-tool").chmod(0o755)
    spec = make_spec(volumes=(VOLUME,), path=("bin",))
    spec.env["JOB_SECRET"] = "s3cret-value"
    handle = await runtime.start(await runtime.create(spec))
    await wait_for(runtime, handle, InstanceState.running)
    await logs_until(runtime, handle, "app uid")
    return handle, spec


async def test_a_command_runs_with_the_apps_code_env_path_and_volume(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> None:
    handle, spec = await live(runtime, make_spec, app_dir)
    command = (
        'echo "env=$JOB_SECRET"; echo "uid=$(id -u)"; ls /app/app.py; planned-tool; '
        'echo "written by cron" > /data/cron.txt; echo oops >&2; exit 3'
    )
    result, seen = await run(runtime, handle, spec, command)
    assert result == ExecResult(3), (result, seen)
    stdout = [line for stream, line in seen if stream == "stdout"]
    assert stdout[:2] == ["env=s3cret-value", "uid=10001"], stdout
    assert "/app/app.py" in stdout and "planned tool ran" in stdout, stdout
    assert ("stderr", "oops") in seen
    result, seen = await run(runtime, handle, spec, "cat /data/cron.txt")
    assert result == ExecResult(0) and seen == [("stdout", "written by cron")], seen


async def test_a_timeout_kills_the_command_and_its_children(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> None:
    handle, spec = await live(runtime, make_spec, app_dir)
    started = time.monotonic()
    result, seen = await run(
        runtime, handle, spec, "echo started; sleep 300 & sleep 301; echo never", timeout=2
    )
    assert result.timed_out and result.exit_code is None, (result, seen)
    assert time.monotonic() - started < 15
    assert seen == [("stdout", "started")]
    every = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"
    result, seen = await run(runtime, handle, spec, every)
    commands = [line for _, line in seen]
    assert any(line.startswith("python app.py") for line in commands), commands  # the app
    assert not [line for line in commands if line.startswith("sleep 30")], commands
    assert (await runtime.status(handle)).state is InstanceState.running


async def test_a_stopped_container_runs_nothing(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> None:
    handle, spec = await live(runtime, make_spec, app_dir)
    await runtime.stop(handle, timeout=2)
    result, seen = await run(runtime, handle, spec, "echo should not run")
    assert result.exit_code is None and "not running" in (result.error or ""), result
    assert seen == []
