"""The process runtime against the real machine: bubblewrap, cgroups, ports, processes.

Needs root (bwrap runs privileged and the app drops to its project's uid; cgroups are
written) and the 'bubblewrap' package. Each test gets its own runtime root under tmp_path;
whatever a test leaves behind is removed by the `runtimes` fixture, so no process outlives a
failing test.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from devpush.errors import RuntimeFailure
from devpush.runtime.base import (
    InstanceState,
    InstanceStatus,
    LogRecord,
    Phase,
    RuntimeHandle,
    RuntimeSpec,
)
from devpush.runtime.process import ProcessRuntime
from devpush.runtime.process_sandbox import NO_BWRAP_MESSAGE
from tests.integration.runtime_process.conftest import PORT_RANGE

# Run as a separate "worker" process that starts an app and is then SIGKILLed by the test.
WORKER = r"""
import asyncio, json, sys
from pathlib import Path
from devpush.runtime.base import RuntimeSpec
from devpush.runtime.process import ProcessRuntime


async def main():
    runtime = ProcessRuntime(root=Path(sys.argv[1]), protected_paths=[], allow_unsandboxed=False)
    spec = RuntimeSpec(deployment_id=sys.argv[3], project_id="p", source_dir=Path(sys.argv[2]),
                       start_command="python3 app.py", env={"BODY": "survivor"})
    handle = await runtime.start(await runtime.create(spec))
    print(json.dumps(handle.to_json()), flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
"""


# -- fixtures and helpers ---------------------------------------------------------------------


def make_spec(source: Path, **fields: Any) -> RuntimeSpec:
    values: dict[str, Any] = {
        "deployment_id": f"dep-{uuid.uuid4().hex[:12]}",
        "project_id": "proj-1",
        "source_dir": source,
        "start_command": "python3 app.py",
        "labels": {"devpush.deployment": "d", "devpush.project": "proj-1"},
    }
    values.update(fields)
    return RuntimeSpec(**values)


async def deploy(runtime: ProcessRuntime, spec: RuntimeSpec) -> RuntimeHandle:
    handle = await runtime.start(await runtime.create(spec))
    assert handle.upstream is not None
    return handle


async def get(handle: RuntimeHandle, path: str = "/", timeout: float = 10.0) -> httpx.Response:
    """GETs the app once it listens (the readiness probe's job in production)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                return await client.get(f"http://{handle.upstream}{path}")
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)


async def wait_exited(
    runtime: ProcessRuntime, handle: RuntimeHandle, timeout: float = 10.0
) -> InstanceStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await runtime.status(handle)
        if status.state is InstanceState.exited or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.02)


async def all_logs(runtime: ProcessRuntime, handle: RuntimeHandle) -> list[LogRecord]:
    return [record async for record in runtime.logs(handle, follow=False)]


def lines(records: list[LogRecord], stream: str) -> list[tuple[Phase, str]]:
    return [(record.phase, record.message) for record in records if record.stream == stream]


def instance_processes(handle: RuntimeHandle) -> list[psutil.Process]:
    root = psutil.Process(handle.data["pid"])
    return [root, *root.children(recursive=True)]


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    def running(proc: psutil.Process) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [proc for proc in procs if running(proc)]


def processes_with(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if tag in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
            found.append(proc)
    return alive(found)


# -- deploy, logs, status ---------------------------------------------------------------------


async def test_app_serves_on_its_own_port_as_its_project(runtime: ProcessRuntime, source: Path):
    spec = make_spec(source, env={"BODY": "hello from devpush", "PORT": "1"}, port=1)
    handle = await deploy(runtime, spec)

    host, port = handle.upstream.split(":")  # type: ignore[union-attr]
    # Its own network namespace: its own address on the instances' subnet (tests/security).
    assert ipaddress.ip_address(host) in ipaddress.ip_network("10.213.0.0/16")
    assert PORT_RANGE[0] <= int(port) <= PORT_RANGE[1]
    assert (await get(handle)).text == "hello from devpush"
    probe = (await get(handle, "/probe")).json()
    assert (probe["env"]["PORT"], probe["env"]["HOST"]) == (port, "0.0.0.0")
    # Its project's own uid and gid, from the reserved range (tests/security/test_process_uids.py).
    uid = probe["uid"]
    assert 200_000 <= uid < 300_000 and probe["gid"] == uid
    assert probe["ca_certs"] > 0  # /etc/ssl is readable: the app can make TLS calls
    assert (await runtime.status(handle)).state is InstanceState.running

    info = json.loads((Path(handle.data["dir"]) / "instance.json").read_text())
    assert info["port"] == int(port) and info["pid"] == handle.data["pid"]
    assert info["address"] == host
    assert info["user"] == f"{uid}:{uid}"
    assert info["spec"]["env_keys"] == ["BODY", "PORT"]
    assert info["labels"] == spec.labels
    assert "hello from devpush" not in json.dumps(info)  # env values are never written
    for name in ("app", "state", "logs/stdout.log", "logs/stderr.log"):
        assert (Path(handle.data["dir"]) / name).exists()

    described = await runtime.describe()
    assert described["sandbox"].startswith("bubblewrap ")
    assert described["limits"] == "cgroup v1"  # this machine: hybrid v1 hierarchy, root
    assert described["app_user"] == "per project, from uids 200000-299999"
    assert described["network"].startswith("isolated: ")


async def test_concurrent_deployments_get_distinct_ports(runtime: ProcessRuntime, source: Path):
    specs = [make_spec(source, env={"BODY": f"app {i}"}) for i in range(5)]
    handles = await asyncio.gather(*(deploy(runtime, spec) for spec in specs))

    assert len({handle.upstream for handle in handles}) == 5
    assert [(await get(handle)).text for handle in handles] == [f"app {i}" for i in range(5)]


async def test_logs_are_tagged_by_stream_and_phase_in_order(runtime: ProcessRuntime, source: Path):
    spec = make_spec(
        source,
        build_command="echo build one; echo build err >&2; echo build two",
        pre_deploy_command="echo migrating",
    )
    handle = await deploy(runtime, spec)
    await get(handle)

    records = await all_logs(runtime, handle)
    assert [(p, m.split(" took ")[0]) for p, m in lines(records, "stdout")] == [
        (Phase.build, "build one"),
        (Phase.build, "build two"),
        (Phase.build, "devpush: build"),
        (Phase.pre_deploy, "migrating"),
        (Phase.pre_deploy, "devpush: pre-deploy"),
        (Phase.runtime, f"app listening on {handle.upstream.split(':')[1]}"),  # type: ignore[union-attr]
    ]
    assert lines(records, "stderr") == [
        (Phase.build, "build err"),
        (Phase.runtime, "app warning on stderr"),
    ]


async def test_follow_is_live_and_ends_when_the_app_exits(runtime: ProcessRuntime, source: Path):
    start = (
        "python3 -c 'import time\n"
        "for i in range(5):\n"
        '    print("tick", i, time.time(), flush=True); time.sleep(0.2)\''
    )
    handle = await deploy(runtime, make_spec(source, start_command=start))

    records = []
    async with asyncio.timeout(10):
        async for record in runtime.logs(handle, follow=True):
            records.append(record)
    ticks = [record for record in records if record.message.startswith("tick")]
    assert [record.message.split()[1] for record in ticks] == ["0", "1", "2", "3", "4"]
    latencies = [record.ts.timestamp() - float(record.message.split()[2]) for record in ticks]
    assert max(latencies) < 0.25, latencies  # polled every 25 ms
    assert (await runtime.status(handle)).state is InstanceState.exited


async def test_long_lines_are_cut_and_bad_utf8_replaced(runtime: ProcessRuntime, source: Path):
    build = "printf 'caf\\351 ok\\n'; python3 -c 'print(\"x\" * 70000); print(\"after\")'"
    handle = await deploy(runtime, make_spec(source, build_command=build))
    await get(handle)

    stdout = [message for _, message in lines(await all_logs(runtime, handle), "stdout")]
    assert stdout[0] == "caf\ufffd ok"
    assert stdout[1] == "x" * 65536
    assert stdout[2] == "after"


async def test_build_failure_exits_in_build_with_its_code(runtime: ProcessRuntime, source: Path):
    spec = make_spec(source, build_command="echo compiling; exit 3")
    handle = await deploy(runtime, spec)

    status = await wait_exited(runtime, handle)
    assert (status.state, status.phase, status.exit_code) == (InstanceState.exited, Phase.build, 3)
    assert lines(await all_logs(runtime, handle), "stdout") == [(Phase.build, "compiling")]


async def test_app_exiting_at_start_exits_in_runtime(runtime: ProcessRuntime, source: Path):
    handle = await deploy(runtime, make_spec(source, start_command="echo bye; exit 4"))

    status = await wait_exited(runtime, handle)
    assert (status.state, status.phase, status.exit_code) == (
        InstanceState.exited,
        Phase.runtime,
        4,
    )
    # The worker reaps what it started: no zombie is left behind.
    pid = handle.data["pid"]
    for _ in range(100):
        if not psutil.pid_exists(pid):
            break
        await asyncio.sleep(0.01)
    assert not psutil.pid_exists(pid)


# -- stop, remove, list ----------------------------------------------------------------------


async def test_stop_and_remove_are_idempotent_and_leave_nothing(
    runtime: ProcessRuntime, source: Path
):
    tag = f"tag-{uuid.uuid4().hex}"
    # `sleep` children prove the whole tree goes, not only the entrypoint.
    start = f"sleep 300 & python3 app.py {tag}"
    handle = await deploy(runtime, make_spec(source, start_command=start))
    await get(handle)
    procs = instance_processes(handle)
    assert len(procs) >= 4 and processes_with(tag)
    cgroups = json.loads((Path(handle.data["dir"]) / "instance.json").read_text())["cgroups"]

    await runtime.stop(handle, timeout=5)
    await runtime.stop(handle, timeout=5)
    status = await runtime.status(handle)
    assert status.state is InstanceState.exited and status.phase is Phase.runtime
    assert status.exit_code is not None
    assert alive(procs) == [] and processes_with(tag) == []

    await runtime.remove(handle)
    await runtime.remove(handle)
    await runtime.stop(handle)
    assert (await runtime.status(handle)).state is InstanceState.missing
    assert not Path(handle.data["dir"]).exists()
    assert cgroups and not any(Path(directory).exists() for directory in cgroups.values())
    assert await runtime.list() == []


# Traps SIGTERM (once: the process runtime signals the app and the entrypoint passes it on),
# says so, finishes its work for $SHUTDOWN_SECONDS and exits 0; with $IGNORE_TERM it ignores it.
GRACEFUL = r"""
import os, signal, sys, time

stopping = False


def term(signum, frame):
    global stopping
    if stopping:
        return
    stopping = True
    print("received SIGTERM, finishing requests", flush=True)
    time.sleep(float(os.environ.get("SHUTDOWN_SECONDS", "1")))
    print("shut down cleanly", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else term)
print("app ready", flush=True)
while True:
    time.sleep(0.05)
"""


async def started_graceful(
    runtime: ProcessRuntime, source: Path, **env: str
) -> tuple[RuntimeHandle, list[psutil.Process]]:
    """The GRACEFUL app, running with its signal handler in place."""
    (source / "graceful.py").write_text(GRACEFUL)
    handle = await deploy(runtime, make_spec(source, start_command="python3 graceful.py", env=env))
    deadline = time.monotonic() + 10
    while not any(r.message == "app ready" for r in await all_logs(runtime, handle)):
        assert time.monotonic() < deadline, "the app did not start"
        await asyncio.sleep(0.02)
    return handle, instance_processes(handle)


async def test_stop_waits_for_a_graceful_shutdown_and_no_longer(
    runtime: ProcessRuntime, source: Path
):
    handle, procs = await started_graceful(runtime, source, SHUTDOWN_SECONDS="1")
    started = time.monotonic()
    await runtime.stop(handle, timeout=10)
    took = time.monotonic() - started
    assert 0.9 <= took < 5, took  # the app's own shutdown, not the whole grace period
    assert alive(procs) == []
    status = await runtime.status(handle)
    assert (status.state, status.phase, status.exit_code) == (
        InstanceState.exited,
        Phase.runtime,
        0,
    ), status
    messages = [message for _, message in lines(await all_logs(runtime, handle), "stdout")]
    assert messages.count("received SIGTERM, finishing requests") == 1, messages
    assert messages[-1] == "shut down cleanly", messages


async def test_stop_kills_an_app_that_ignores_sigterm_after_the_timeout(
    runtime: ProcessRuntime, source: Path
):
    handle, procs = await started_graceful(runtime, source, IGNORE_TERM="1")
    started = time.monotonic()
    await runtime.stop(handle, timeout=1.5)
    took = time.monotonic() - started
    assert 1.5 <= took < 5, took
    assert alive(procs) == []
    status = await runtime.status(handle)
    assert status.state is InstanceState.exited and status.exit_code != 0, status


async def test_list_returns_every_instance(runtime: ProcessRuntime, source: Path):
    first = await runtime.create(make_spec(source))
    second = await deploy(runtime, make_spec(source))

    listed = {handle.id: handle for handle in await runtime.list()}
    assert set(listed) == {first.id, second.id}
    assert listed[first.id].upstream is None and listed[second.id].upstream == second.upstream
    assert (await runtime.status(first)).state is InstanceState.created


async def test_create_replaces_a_leftover_instance(runtime: ProcessRuntime, source: Path):
    spec = make_spec(source, env={"BODY": "first"})
    first = await deploy(runtime, spec)
    first_procs = instance_processes(first)

    second = await deploy(runtime, make_spec(source, deployment_id=spec.deployment_id))
    assert alive(first_procs) == []
    assert (await get(second)).text == ""
    assert await runtime.start(second) == second  # starting a running instance is harmless


# -- sandbox ----------------------------------------------------------------------------------


async def test_app_cannot_see_protected_paths(
    runtimes: Callable[..., ProcessRuntime], source: Path, data_dir: Path, tmp_path: Path
):
    secret = data_dir / "secret.key"
    secret.write_text("platform secret")
    # A protected directory inside a tree the sandbox does show (/usr), next to a control file.
    shown = Path(f"/usr/local/share/devpush-test-{uuid.uuid4().hex}")
    hidden = shown.with_name(shown.name + "-protected")
    try:
        for directory in (shown, hidden):
            directory.mkdir(mode=0o755, parents=True)
            (directory / "file").write_text("content")
            # readable by the sandbox's user whatever the umask (the platform's is 077)
            directory.chmod(0o755)
            (directory / "file").chmod(0o644)
        runtime = runtimes(protected_paths=[data_dir, hidden])
        reads = [str(secret), str(hidden / "file"), str(shown / "file")]
        exists = [str(data_dir), str(tmp_path), "/work", "/root", "/sys/fs/cgroup"]
        env = {"PROBE_READ": ":".join(reads), "PROBE_EXISTS": ":".join(exists)}
        handle = await deploy(runtime, make_spec(source, env=env))

        probe = (await get(handle, "/probe")).json()
        assert probe["read"] == {
            str(secret): "error:FileNotFoundError",
            str(hidden / "file"): "error:FileNotFoundError",
            str(shown / "file"): "read:content",
        }
        assert probe["exists"] == dict.fromkeys(exists, False)
    finally:
        for directory in (shown, hidden):
            (directory / "file").unlink(missing_ok=True)
            if directory.exists():
                directory.rmdir()


async def test_app_does_not_get_the_workers_environment(
    runtime: ProcessRuntime, source: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DEVPUSH_SECRET_KEY", "worker-only-secret")
    spec = make_spec(source, env={"BODY": "x", "DEVPUSH_START_COMMAND": "echo hijacked"})
    handle = await deploy(runtime, spec)

    env = (await get(handle, "/probe")).json()["env"]
    assert "worker-only-secret" not in json.dumps(env)
    assert env["BODY"] == "x" and env["HOME"] == "/app" and env["LANG"] == "C.UTF-8"
    # The entrypoint unsets the commands; what is left is the app's env plus a few basics.
    assert set(env) <= {"BODY", "PORT", "HOST", "PATH", "HOME", "LANG", "PWD", "OLDPWD"} | {
        "DEVPUSH_APP_DIR",
        "DEVPUSH_STATE_DIR",
    }


async def test_app_has_a_private_tmp(runtime: ProcessRuntime, source: Path):
    host_file = Path(f"/tmp/devpush-host-{uuid.uuid4().hex}")
    host_file.write_text("host")
    try:
        start = "echo private > /tmp/app-file && python3 app.py"
        env = {"PROBE_EXISTS": f"{host_file}:/tmp/app-file"}
        handle = await deploy(runtime, make_spec(source, start_command=start, env=env))

        probe = (await get(handle, "/probe")).json()
        assert probe["exists"] == {str(host_file): False, "/tmp/app-file": True}
        assert not Path("/tmp/app-file").exists()
    finally:
        host_file.unlink()


async def test_refuses_to_run_without_bubblewrap(
    runtimes: Callable[..., ProcessRuntime], source: Path
):
    sandboxed = runtimes()
    handle = await sandboxed.create(make_spec(source))
    runtime = runtimes(bwrap=None)

    with pytest.raises(RuntimeFailure) as create_error:
        await runtime.create(make_spec(source))
    with pytest.raises(RuntimeFailure) as start_error:
        await runtime.start(handle)
    assert create_error.value.message == NO_BWRAP_MESSAGE
    assert start_error.value.message == NO_BWRAP_MESSAGE
    assert [h.id for h in await runtime.list()] == [handle.id]  # nothing was created


async def test_runs_unsandboxed_only_when_allowed(
    runtimes: Callable[..., ProcessRuntime], source: Path
):
    runtime = runtimes(bwrap=None, allow_unsandboxed=True)
    handle = await deploy(runtime, make_spec(source, env={"BODY": "bare"}))

    assert (await get(handle)).text == "bare"
    assert (await runtime.describe())["sandbox"] == "unsandboxed"
    await runtime.stop(handle)
    assert (await runtime.status(handle)).state is InstanceState.exited


# -- outliving the worker ---------------------------------------------------------------------


async def test_app_outlives_the_runtime_that_started_it(
    runtimes: Callable[..., ProcessRuntime], source: Path
):
    first = runtimes()
    handle = await deploy(first, make_spec(source, env={"BODY": "still here"}))
    await get(handle)
    del first
    gc.collect()

    second = runtimes()
    assert (await get(handle)).text == "still here"
    assert (await second.status(handle)).state is InstanceState.running
    procs = instance_processes(handle)
    await second.stop(handle)
    status = await second.status(handle)
    assert (status.state, status.exit_code) == (InstanceState.exited, 143)
    assert alive(procs) == []


async def test_app_outlives_a_killed_worker(
    runtimes: Callable[..., ProcessRuntime], source: Path, data_dir: Path, tmp_path: Path
):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = data_dir / "runtime" / "process"
    worker = subprocess.Popen(
        [sys.executable, str(script), str(root), str(source), f"worker-{uuid.uuid4().hex}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 20)  # type: ignore[union-attr]
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker.stdout.close()  # type: ignore[union-attr]
    handle = RuntimeHandle.from_json(json.loads(line))

    runtime = runtimes()
    assert (await get(handle)).text == "survivor"
    assert (await runtime.status(handle)).state is InstanceState.running
    await runtime.stop(handle)
    status = await runtime.status(handle)
    assert (status.state, status.phase, status.exit_code) == (
        InstanceState.exited,
        Phase.runtime,
        143,
    )


# -- limits -----------------------------------------------------------------------------------

HOG = "python3 -c 'x = bytearray(512 * 1024 * 1024); print(\"allocated\", flush=True)'"


async def test_memory_limit_kills_the_app(runtime: ProcessRuntime, source: Path):
    handle = await deploy(runtime, make_spec(source, start_command=HOG, memory_mb=64))

    status = await wait_exited(runtime, handle)
    assert (status.state, status.phase) == (InstanceState.exited, Phase.runtime)
    assert (status.exit_code, status.error) == (137, "OOM killed")
    assert "allocated" not in [
        message for _, message in lines(await all_logs(runtime, handle), "stdout")
    ]


async def test_pids_and_cpu_limits(runtime: ProcessRuntime, source: Path):
    start = (
        "python3 -c 'import threading, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(64):\n"
        "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); n += 1\n"
        "except RuntimeError:\n"
        "    pass\n"
        'print("threads", n, flush=True)\''
    )
    handle = await deploy(runtime, make_spec(source, start_command=start, pids_limit=16, cpus=0.5))
    await wait_exited(runtime, handle)

    threads = [m for _, m in lines(await all_logs(runtime, handle), "stdout") if "threads" in m]
    assert threads and int(threads[0].split()[1]) < 16
    cgroups = json.loads((Path(handle.data["dir"]) / "instance.json").read_text())["cgroups"]
    assert (Path(cgroups["cpu"]) / "cpu.cfs_quota_us").read_text().strip() == "50000"


async def test_rlimit_fallback_without_cgroups(
    runtimes: Callable[..., ProcessRuntime], source: Path
):
    runtime = runtimes(cgroup_root=None)
    handle = await deploy(runtime, make_spec(source, start_command=HOG, memory_mb=64))

    status = await wait_exited(runtime, handle)
    assert (status.phase, status.exit_code) == (Phase.runtime, 1)
    assert "MemoryError" in [m for _, m in lines(await all_logs(runtime, handle), "stderr")]
    described = await runtime.describe()
    assert described["limits"] == "rlimit"
    assert described["limits_enforced"] == ["memory (RLIMIT_DATA, per process)"]
