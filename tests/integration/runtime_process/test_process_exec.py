"""One-off commands (cron jobs) beside a running process-runtime app, on the real machine
(bubblewrap, cgroups, the instance's network namespace): the command sees the app's code, env,
PATH entries and volume, runs as the app's uid, its output arrives line by line, its exit code
is kept, and a timeout kills it with everything it started."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import psutil

from devpush.runtime.base import ExecResult, RuntimeHandle, RuntimeSpec, VolumeMount
from devpush.runtime.process import ProcessRuntime
from tests.integration.runtime_process.test_process_runtime import deploy, get, make_spec

VOLUME = VolumeMount(name="data", mount_path="/srv/data", environment_id="env-prod")


async def run(
    runtime: ProcessRuntime,
    handle: RuntimeHandle,
    spec: RuntimeSpec,
    command: str,
    timeout: float = 20,
) -> tuple[ExecResult, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    async def output(stream: str, line: str) -> None:
        seen.append((stream, line))

    result = await runtime.exec(handle, spec, command, timeout=timeout, output=output)
    return result, seen


async def live(runtime: ProcessRuntime, source: Path) -> tuple[RuntimeHandle, RuntimeSpec]:
    (source / "bin").mkdir()
    (source / "bin" / "planned-tool").write_text("#!/bin/sh\necho planned tool ran\n")
    (source / "bin" / "planned-tool").chmod(0o755)
    spec = make_spec(
        source, env={"BODY": "hello", "JOB_SECRET": "s3cret-value"}, volumes=(VOLUME,),
        path=("bin",),
    )  # fmt: skip
    handle = await deploy(runtime, spec)
    assert (await get(handle)).text == "hello"
    return handle, spec


async def test_a_command_runs_with_the_apps_code_env_path_and_volume(
    runtime: ProcessRuntime, source: Path
) -> None:
    handle, spec = await live(runtime, source)
    command = (
        'echo "env=$JOB_SECRET"; echo "uid=$(id -u)"; ls /app/app.py; planned-tool; '
        'echo "written by cron" > /srv/data/cron.txt; echo oops >&2; exit 3'
    )
    result, seen = await run(runtime, handle, spec, command)
    assert result == ExecResult(3), (result, seen)
    stdout = [line for stream, line in seen if stream == "stdout"]
    assert stdout[0] == "env=s3cret-value"
    assert "/app/app.py" in stdout and "planned tool ran" in stdout, stdout
    assert ("stderr", "oops") in seen
    app_uid = psutil.Process(handle.data["pid"]).children(recursive=True)[-1].uids().real
    assert f"uid={app_uid}" in stdout, (stdout, app_uid)
    # The volume is the environment's copy: the app (and the next run) read what it wrote.
    result, seen = await run(runtime, handle, spec, "cat /srv/data/cron.txt")
    assert result == ExecResult(0) and seen == [("stdout", "written by cron")], seen
    assert (await get(handle)).text == "hello"  # the app kept serving throughout


async def test_a_timeout_kills_the_command_and_its_children(
    runtime: ProcessRuntime, source: Path
) -> None:
    handle, spec = await live(runtime, source)
    started = time.monotonic()
    # Durations no other test uses: the leftovers are looked for among every process here.
    first, second = (f"{300 + secrets.randbelow(10_000)}.{n}" for n in (1, 2))
    result, seen = await run(
        runtime,
        handle,
        spec,
        f"echo started; sleep {first} & sleep {second}; echo never",
        timeout=2,
    )
    assert result.timed_out and result.exit_code is None, result
    assert time.monotonic() - started < 10
    assert seen == [("stdout", "started")]
    leftovers = [
        p for p in psutil.process_iter(["cmdline"])
        if (p.info["cmdline"] or []) in (["sleep", first], ["sleep", second])
    ]  # fmt: skip
    assert leftovers == []
    instance = runtime._root / handle.id
    assert not list(instance.glob("exec-*"))  # its stage file went with it
    assert (await get(handle)).text == "hello"


async def test_a_stopped_app_runs_nothing(runtime: ProcessRuntime, source: Path) -> None:
    handle, spec = await live(runtime, source)
    await runtime.stop(handle, timeout=2)
    result, seen = await run(runtime, handle, spec, "echo should not run")
    assert result.exit_code is None and "not running" in (result.error or "")
    assert seen == []
