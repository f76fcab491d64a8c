"""The docker runtime's one-off commands (Runtime.exec, for cron jobs): an Engine API exec in
the running container (`POST /containers/{id}/exec`, start, inspect for the exit code), as
the app's user in its directory, so it shares the app's code, volumes and limits.

The engine cannot kill an exec, so the command runs under `timeout` (coreutils or busybox,
present in the runner images), which signals its whole process group: TERM, KILL 5 s later."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from devpush.runtime.base import ExecOutput, ExecResult, RuntimeSpec, entrypoint_env
from devpush.runtime.docker_container import APP_DIR, RUNNER_UID, STATE_DIR

MAX_LINE_BYTES = 16 * 1024
KILL_AFTER = 5
TIMED_OUT = (124, 137)  # timeout's own code, or KILL after the grace
# $1 the timeout in seconds, $2 the command; never spliced into the script.
WRAPPER = (
    'if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$1" /bin/sh -c "$2"; '
    'else exec /bin/sh -c "$2"; fi'
)
_OWN = (
    "DEVPUSH_INSTALL_COMMAND",
    "DEVPUSH_BUILD_COMMAND",
    "DEVPUSH_PRE_DEPLOY_COMMAND",
    "DEVPUSH_START_COMMAND",
    "DEVPUSH_PATH",
    "DEVPUSH_INSTALL_CACHE",
)


def exec_env(spec: RuntimeSpec, container_env: list[str]) -> dict[str, str]:
    """The spec's env (rebuilt by the caller) with the plan's PATH entries first, as
    entrypoint.sh sets them for the app."""
    base = dict(item.partition("=")[::2] for item in container_env)
    env = {k: v for k, v in entrypoint_env(spec, spec.env).items() if k not in _OWN}
    env |= {"DEVPUSH_APP_DIR": APP_DIR, "DEVPUSH_STATE_DIR": STATE_DIR}
    prefix = "".join((e if e.startswith("/") else f"{APP_DIR}/{e}") + ":" for e in spec.path)
    env["PATH"] = prefix + base.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


class _Lines:
    """Splits the exec's chunks into lines per stream."""

    def __init__(self, output: ExecOutput) -> None:
        self._output = output
        self._buffers = {"stdout": bytearray(), "stderr": bytearray()}

    async def feed(self, stream: str, data: bytes) -> None:
        buffer = self._buffers[stream]
        buffer += data
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            await self._emit(stream, line)
        if len(buffer) > MAX_LINE_BYTES:
            await self._emit(stream, bytes(buffer))
            buffer.clear()

    async def flush(self) -> None:
        for stream, buffer in self._buffers.items():
            if buffer:
                await self._emit(stream, bytes(buffer))
                buffer.clear()

    async def _emit(self, stream: str, line: bytes) -> None:
        await self._output(stream, line[:MAX_LINE_BYTES].decode("utf-8", "replace").rstrip("\r"))


async def run_exec(
    docker: aiodocker.Docker,
    container_id: str,
    spec: RuntimeSpec,
    command: str,
    *,
    timeout: float,
    output: ExecOutput,
) -> ExecResult:
    """Raises DockerError (the caller explains it); a stopped container is an ExecResult."""
    container = docker.containers.container(container_id)
    try:
        info: dict[str, Any] = await container.show()
    except DockerError as exc:
        if exc.status == 404:
            return ExecResult(None, error="the deployment's container is gone")
        raise
    if not (info.get("State") or {}).get("Running"):
        return ExecResult(None, error="the deployment's container is not running")
    env = exec_env(spec, (info.get("Config") or {}).get("Env") or [])
    seconds = max(1, int(timeout))
    execution = await container.exec(
        ["/bin/sh", "-c", WRAPPER, "devpush-exec", str(seconds), command],
        stdout=True,
        stderr=True,
        user=f"{RUNNER_UID}:{RUNNER_UID}",
        environment=env,
        workdir=APP_DIR,
    )
    lines = _Lines(output)
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds + KILL_AFTER + 10):
            async for stream, data in _frames(docker, execution.id):
                await lines.feed("stderr" if stream == 2 else "stdout", data)
    except TimeoutError:
        await lines.flush()
        return ExecResult(
            None,
            timed_out=True,
            error="the command outlived its timeout and could not be stopped (is `timeout` "
            "missing from the runner image?)",
        )
    await lines.flush()
    code = await _exit_code(execution)
    elapsed = time.monotonic() - started
    timed_out = code in TIMED_OUT and elapsed >= seconds - 0.5
    return ExecResult(None if timed_out else code, timed_out=timed_out)


async def _frames(docker: aiodocker.Docker, exec_id: str) -> AsyncIterator[tuple[int, bytes]]:
    """The exec's output as (stream, bytes) frames. A plain POST, not an upgraded connection:
    the engine answers with the multiplexed stream as the body, which the socket proxy can
    pass on like any other streamed answer."""
    body = json.dumps({"Detach": False, "Tty": False})
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with docker._query(
        f"exec/{exec_id}/start",
        method="POST",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    ) as response:
        buffer = bytearray()
        async for chunk in response.content.iter_any():
            buffer += chunk
            while len(buffer) >= 8:  # [stream, 0, 0, 0, size (4 bytes, big-endian)] + data
                size = int.from_bytes(buffer[4:8], "big")
                if len(buffer) < 8 + size:
                    break
                yield buffer[0], bytes(buffer[8 : 8 + size])
                del buffer[: 8 + size]


async def _exit_code(execution: Any) -> int | None:
    """The exec's exit code; the engine may report it a moment after the stream ends."""
    for _ in range(50):
        details = await execution.inspect()
        if not details.get("Running") and details.get("ExitCode") is not None:
            code: int = details["ExitCode"]
            return code
        await asyncio.sleep(0.1)
    return None
