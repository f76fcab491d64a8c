"""The process runtime's one-off commands (Runtime.exec, for cron jobs): a new process beside a
running instance's app, sandboxed like it (the same bubblewrap argv: its app directory,
volumes, caches and uid), in its network namespace, under the app's limits in a cgroup of its
own, started through driver.py like the app's stages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from devpush.errors import RuntimeFailure
from devpush.runtime.base import (
    CA_ENV,
    ENTRYPOINT,
    ExecOutput,
    ExecResult,
    RuntimeHandle,
    RuntimeSpec,
)
from devpush.runtime.process_files import Instance, check_id
from devpush.runtime.process_limits import (
    Cgroups,
    Limits,
    cgroup_kill,
    cgroup_remove,
    stop_all,
)
from devpush.runtime.process_sandbox import _CA_PATH, _DRIVER, _app_env
from devpush.runtime.process_tree import instance_processes, root_process

MAX_LINE_BYTES = 16 * 1024
_COMMANDS = (
    "DEVPUSH_INSTALL_COMMAND",
    "DEVPUSH_BUILD_COMMAND",
    "DEVPUSH_PRE_DEPLOY_COMMAND",
    "DEVPUSH_START_COMMAND",
    "DEVPUSH_PATH",
    "DEVPUSH_INSTALL_CACHE",
)


class ExecMixin:
    """ProcessRuntime's `exec`. ProcessRuntime (and its other mixins) provide the rest."""

    _root: Path
    _bwrap: str | None
    _ca_bundle: Path | None
    _network: Any

    if TYPE_CHECKING:  # provided by ProcessRuntime, RootMixin and SandboxMixin

        def _load(self, instance_id: str) -> Instance | None: ...
        def _limits(self) -> Cgroups | None: ...
        def _require_sandbox(self) -> None: ...
        def _stage(
            self, directory: Path, spec: RuntimeSpec, cgroup_dirs: dict[str, str], *, build: bool
        ) -> dict[str, Any]: ...

    async def exec(
        self,
        handle: RuntimeHandle,
        spec: RuntimeSpec,
        command: str,
        *,
        timeout: float,
        output: ExecOutput,
    ) -> ExecResult:
        instance_id = check_id(handle.id)
        self._require_sandbox()
        instance = self._load(instance_id)
        if instance is None or root_process(instance) is None:
            return ExecResult(None, error="the deployment's app is not running")
        directory = self._root / instance_id
        token = secrets.token_hex(4)
        exec_dir = directory / f"exec-{token}"
        cgroup_dirs: dict[str, str] = {}
        try:
            cgroup_dirs, argv, env = await asyncio.to_thread(
                self._prepare_exec, instance, directory, exec_dir, spec, command, token
            )
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=directory / "app",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            await asyncio.to_thread(_cleanup, exec_dir, cgroup_dirs)
            raise RuntimeFailure(f"cannot start a command in {instance_id}: {exc}") from exc
        except RuntimeFailure:
            await asyncio.to_thread(_cleanup, exec_dir, cgroup_dirs)
            raise
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.create_task(_read_lines(proc.stdout, "stdout", output)),
            asyncio.create_task(_read_lines(proc.stderr, "stderr", output)),
        ]
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            await asyncio.to_thread(_kill, proc.pid, cgroup_dirs)
            await proc.wait()
        finally:
            if proc.returncode is None:  # canceled: never leave the command running
                await asyncio.to_thread(_kill, proc.pid, cgroup_dirs)
            await asyncio.wait(readers, timeout=5)
            for reader in readers:
                reader.cancel()
            await asyncio.to_thread(_cleanup, exec_dir, cgroup_dirs)
        code = proc.returncode
        if code is not None and code < 0:
            code = 128 - code
        return ExecResult(None if timed_out else code, timed_out=timed_out)

    def _prepare_exec(
        self,
        instance: Instance,
        directory: Path,
        exec_dir: Path,
        spec: RuntimeSpec,
        command: str,
        token: str,
    ) -> tuple[dict[str, str], list[str], dict[str, str]]:
        """The command's own cgroups (the app's limits), its stage for driver.py, its env."""
        cgroups = self._limits()
        cgroup_dirs: dict[str, str] = {}
        if cgroups is not None:
            try:
                cgroup_dirs = cgroups.create(f"{instance.name}-exec-{token}", _app(spec))
            except OSError as exc:
                raise RuntimeFailure(f"cannot set up the command's cgroup: {exc}") from exc
        run = replace_command(self._stage(directory, _no_build(spec), cgroup_dirs, build=False))
        run["argv"] += ["/bin/sh", "-c", command]
        exec_dir.mkdir(mode=0o700)
        stages = exec_dir / "stages.json"
        stages.write_text(json.dumps({"build": None, "run": run}))
        stages.chmod(0o600)
        app_dir = "/app" if self._bwrap else str(directory / "app")
        state_dir = "/devpush/state" if self._bwrap else str(directory / "state")
        env = _app_env(
            spec,
            port=instance.port or spec.port,
            app_dir=app_dir,
            state_dir=state_dir,
            isolated=self._network is not None,
        )
        env = {k: v for k, v in env.items() if k not in _COMMANDS}
        env["PATH"] = _path(spec, app_dir) + env["PATH"]
        if self._ca_bundle is not None:
            ca = _CA_PATH if self._bwrap else str(self._ca_bundle)
            env.update({name: ca for name in CA_ENV})
        argv = [sys.executable, "-I", str(_DRIVER), str(exec_dir)]
        return cgroup_dirs, argv, env


def _app(spec: RuntimeSpec) -> Limits:
    return Limits.of(spec, build=False)


def _no_build(spec: RuntimeSpec) -> RuntimeSpec:
    return replace(spec, install_command=None, build_command=None, pre_deploy_command=None)


def replace_command(stage: dict[str, Any]) -> dict[str, Any]:
    """The app stage without its entrypoint call (`sh entrypoint.sh run`): the sandbox only."""
    tail = stage["argv"][-3:]
    if tail[0] != "/bin/sh" or tail[1] not in ("/devpush/entrypoint.sh", str(ENTRYPOINT)):
        raise RuntimeFailure(f"unexpected app stage {tail!r}; cannot run a command beside it")
    return {"cgroups": stage["cgroups"], "argv": stage["argv"][:-3]}


def _path(spec: RuntimeSpec, app_dir: str) -> str:
    """The plan's PATH entries, as entrypoint.sh puts them first (relative ones in the app)."""
    return "".join((e if e.startswith("/") else f"{app_dir}/{e}") + ":" for e in spec.path)


async def _read_lines(reader: asyncio.StreamReader, stream: str, output: ExecOutput) -> None:
    buffer = bytearray()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer = bytearray(rest)
            await output(stream, line[:MAX_LINE_BYTES].decode("utf-8", "replace").rstrip("\r"))
        if len(buffer) > MAX_LINE_BYTES:  # an overlong line: cut it
            await output(stream, bytes(buffer[:MAX_LINE_BYTES]).decode("utf-8", "replace"))
            buffer.clear()
    if buffer:
        await output(stream, bytes(buffer).decode("utf-8", "replace").rstrip("\r"))


def _kill(pid: int, cgroup_dirs: dict[str, str]) -> None:
    """SIGKILL to the command and everything it started: its cgroup where it has one, and its
    process tree (a sandbox's processes are the driver's descendants on the host too)."""
    if cgroup_dirs:
        with contextlib.suppress(RuntimeFailure, OSError):
            cgroup_kill(cgroup_dirs)
    try:
        root: psutil.Process | None = psutil.Process(pid)
    except psutil.Error:
        root = None
    # stopped first, so that none runs on while the others die
    for each in stop_all(lambda: {p.pid for p in instance_processes(root, cgroup_dirs)}):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _cleanup(exec_dir: Path, cgroup_dirs: dict[str, str]) -> None:
    shutil.rmtree(exec_dir, ignore_errors=True)
    if cgroup_dirs:
        with contextlib.suppress(RuntimeFailure):
            cgroup_remove(cgroup_dirs)
