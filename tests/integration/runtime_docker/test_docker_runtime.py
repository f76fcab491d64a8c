"""The docker runtime against real Podman: containers, the runner network, logs and limits.

Each test gets a fresh project id; the `runtime` fixture removes that project's containers
afterwards, so nothing outlives a failing test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiodocker
import httpx
import pytest

from devpush.errors import RuntimeFailure
from devpush.runtime.base import (
    PHASE_MARKER,
    InstanceState,
    InstanceStatus,
    LogRecord,
    Phase,
    RuntimeHandle,
    RuntimeSpec,
)
from devpush.runtime.docker import DockerRuntime
from devpush.runtime.docker_logs import MAX_LINE_BYTES

MakeSpec = Callable[..., RuntimeSpec]

# Tries each "host:port" in $PROBE_TARGETS once and prints what happened.
PROBE = r"""
import os, socket
for target in os.environ["PROBE_TARGETS"].split():
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        result = "open"
    except OSError as exc:
        result = "closed:" + type(exc).__name__
    print("probe", target, result, flush=True)
"""

NOISY = r"""
import sys
sys.stdout.buffer.write(b"x" * 100_000 + b"\n")
sys.stdout.buffer.write(b"bad \xff byte\n")
sys.stdout.buffer.write(b"no newline at the end")
"""


async def wait_for(
    runtime: DockerRuntime, handle: RuntimeHandle, *states: InstanceState, timeout: float = 20
) -> InstanceStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await runtime.status(handle)
        if status.state in states or time.monotonic() > deadline:
            assert status.state in states, status
            return status
        await asyncio.sleep(0.1)


async def all_logs(runtime: DockerRuntime, handle: RuntimeHandle) -> list[LogRecord]:
    return [record async for record in runtime.logs(handle, follow=False)]


async def logs_until(
    runtime: DockerRuntime, handle: RuntimeHandle, text: str, timeout: float = 10
) -> list[LogRecord]:
    """The logs once a line containing `text` is there (the engine writes them a bit later)."""
    deadline = time.monotonic() + timeout
    while True:
        records = await all_logs(runtime, handle)
        if any(text in r.message for r in records) or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.1)


async def get_when_ready(url: str, timeout: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                return await client.get(url)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def test_deploy_serves_the_app_and_logs_each_phase(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(
        build_command="echo building the app; echo build warning >&2",
        pre_deploy_command="echo migrating",
    )
    handle = await runtime.create(spec)
    assert (await runtime.status(handle)).state is InstanceState.created

    handle = await runtime.start(handle)
    assert handle.upstream and handle.upstream.endswith(":8000")
    status = await wait_for(runtime, handle, InstanceState.running)
    assert status.phase is Phase.runtime

    response = await get_when_ready(f"http://{handle.upstream}/")
    assert response.status_code == 200
    assert response.text == f"hello from {spec.deployment_id}"

    records = await logs_until(runtime, handle, "app warning on stderr")
    seen = [(r.stream, r.phase, r.message) for r in records]
    expected = [
        ("stdout", Phase.build, "building the app"),
        ("stderr", Phase.build, "build warning"),
        ("stdout", Phase.pre_deploy, "migrating"),
        ("stdout", Phase.runtime, "app uid 10001"),  # not root
        ("stderr", Phase.runtime, "app warning on stderr"),
    ]
    for line in expected:
        assert line in seen, seen
    assert ("stdout", Phase.build, "building the app") in seen
    timed = [m for s, p, m in seen if m.startswith("devpush: ")]
    assert [m.split(" took ")[0] for m in timed] == ["devpush: build", "devpush: pre-deploy"]
    stdout = [line for line in seen if line[0] == "stdout" and not line[2].startswith("devpush: ")]
    assert [stdout.index(line) for line in expected if line[0] == "stdout"] == [0, 1, 2]
    assert not any(r.message.startswith(PHASE_MARKER) for r in records)
    assert all(r.ts.tzinfo is not None for r in records)


async def test_build_failure_exits_in_the_build_phase(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    handle = await runtime.start(await runtime.create(make_spec(build_command="exit 3")))
    status = await wait_for(runtime, handle, InstanceState.exited)
    assert (status.phase, status.exit_code) == (Phase.build, 3)
    assert not [r for r in await all_logs(runtime, handle) if r.phase is Phase.runtime]


async def test_app_that_exits_at_start_exits_in_the_runtime_phase(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(start_command="echo giving up; exit 4")
    handle = await runtime.start(await runtime.create(spec))
    status = await wait_for(runtime, handle, InstanceState.exited)
    assert (status.phase, status.exit_code) == (Phase.runtime, 4)
    records = await logs_until(runtime, handle, "giving up")
    assert ("stdout", Phase.runtime, "giving up") in [
        (r.stream, r.phase, r.message) for r in records
    ]


async def test_remove_is_idempotent_and_list_follows(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec()
    handle = await runtime.start(await runtime.create(spec))
    await wait_for(runtime, handle, InstanceState.running)

    listed = {h.id: h for h in await runtime.list()}
    assert handle.id in listed
    found = listed[handle.id]
    assert (found.backend, found.deployment_id) == ("docker", spec.deployment_id)
    assert found.upstream == handle.upstream
    assert found.data["project_id"] == spec.project_id

    await runtime.remove(handle)
    await runtime.remove(handle)
    await runtime.stop(handle)
    assert (await runtime.status(handle)).state is InstanceState.missing
    assert handle.id not in {h.id for h in await runtime.list()}


async def test_create_twice_replaces_the_container(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec()
    first = await runtime.create(spec)
    second = await runtime.create(spec)  # the job ran twice
    assert first.id != second.id
    assert (await runtime.status(first)).state is InstanceState.missing
    mine = [h for h in await runtime.list() if h.deployment_id == spec.deployment_id]
    assert [h.id for h in mine] == [second.id]


async def test_labels_hold_ids_and_no_env_values(
    runtime: DockerRuntime, make_spec: MakeSpec, podman: str
) -> None:
    secret = "s3cr3t-do-not-label-me"
    spec = make_spec(env={"PORT": "8000", "BODY": "x", "API_TOKEN": secret})
    handle = await runtime.create(spec)
    async with aiodocker.Docker(url=podman) as docker:
        info = await docker.containers.container(handle.id).show()
    labels = info["Config"]["Labels"]
    assert labels["devpush.managed"] == "true"
    assert labels["devpush.deployment"] == spec.deployment_id
    assert labels["devpush.project"] == spec.project_id
    assert labels["devpush.environment"] == "production"
    assert not [k for k, v in labels.items() if secret in k or secret in v]
    assert f"API_TOKEN={secret}" in info["Config"]["Env"]  # it is passed, as env only


async def test_app_runs_unprivileged(runtime: DockerRuntime, make_spec: MakeSpec) -> None:
    spec = make_spec(start_command="id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    handle = await runtime.start(await runtime.create(spec))
    await wait_for(runtime, handle, InstanceState.exited)
    messages = [r.message for r in await logs_until(runtime, handle, "NoNewPrivs")]
    assert "10001" in messages
    assert re.sub(r"\s+", " ", next(m for m in messages if m.startswith("CapEff"))) == (
        "CapEff: 0000000000000000"
    )
    assert re.sub(r"\s+", " ", next(m for m in messages if m.startswith("NoNewPrivs"))) == (
        "NoNewPrivs: 1"
    )


def _listener(host: str) -> socket.socket:
    sock = socket.socket()
    # FREEBIND: the gateway address exists only while a container is attached to the network.
    sock.setsockopt(socket.SOL_IP, getattr(socket, "IP_FREEBIND", 15), 1)
    sock.bind((host, 0))
    sock.listen()
    return sock


async def test_deployment_cannot_reach_services_on_host_loopback(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path, gateway: str
) -> None:
    (app_dir / "probe.py").write_text(PROBE)
    with _listener("127.0.0.1") as loopback, _listener(gateway) as control:
        lo_port, control_port = loopback.getsockname()[1], control.getsockname()[1]
        blocked = [
            f"{gateway}:5432",
            f"{gateway}:6379",
            f"{gateway}:{lo_port}",  # our own 127.0.0.1 listener, in case nothing uses 5432
            "127.0.0.1:5432",
            "127.0.0.1:6379",
        ]
        reachable = f"{gateway}:{control_port}"  # proves the probe can connect at all
        env = {"PORT": "8000", "PROBE_TARGETS": " ".join([*blocked, reachable])}
        handle = await runtime.start(
            await runtime.create(make_spec(start_command="python probe.py", env=env))
        )
        status = await wait_for(runtime, handle, InstanceState.exited)
        assert status.exit_code == 0
        records = await logs_until(runtime, handle, f"probe {reachable}")
    results = dict(r.message.split()[1:3] for r in records if r.message.startswith("probe "))
    assert results[reachable] == "open", results
    for target in blocked:
        assert results[target].startswith("closed:"), results


async def test_logs_follow_until_exit_and_cut_long_lines(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> None:
    (app_dir / "noisy.py").write_text(NOISY)
    spec = make_spec(start_command="echo one; sleep 1; python noisy.py")
    handle = await runtime.start(await runtime.create(spec))
    async with asyncio.timeout(20):
        records = [r async for r in runtime.logs(handle, follow=True)]  # ends when it exits
    messages = [r.message for r in records]
    assert messages[0] == "one"
    assert messages[1] == "x" * MAX_LINE_BYTES
    assert messages[2:] == ["bad \ufffd byte", "no newline at the end"]
    assert {r.phase for r in records} == {Phase.runtime}


async def test_stop_ends_the_app(runtime: DockerRuntime, make_spec: MakeSpec) -> None:
    handle = await runtime.start(await runtime.create(make_spec()))
    await wait_for(runtime, handle, InstanceState.running)
    started = time.monotonic()
    await runtime.stop(handle, timeout=5)
    assert time.monotonic() - started < 4  # SIGTERM reached the app; no kill after 5 s
    status = await runtime.status(handle)
    assert (status.state, status.phase) == (InstanceState.exited, Phase.runtime)
    await runtime.stop(handle)  # again: fine


# Traps SIGTERM (once), says so, finishes its work for $SHUTDOWN_SECONDS and exits 0; tells
# $NOTIFY ("host:port") when it got SIGTERM; with $IGNORE_TERM it ignores SIGTERM.
GRACEFUL = r"""
import os, signal, socket, sys, time

stopping = False


def term(signum, frame):
    global stopping
    if stopping:
        return
    stopping = True
    print("received SIGTERM, finishing requests", flush=True)
    if os.environ.get("NOTIFY"):
        host, port = os.environ["NOTIFY"].rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).sendall(b"SIGTERM")
    time.sleep(float(os.environ.get("SHUTDOWN_SECONDS", "1")))
    print("shut down cleanly", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else term)
print("app ready", flush=True)
while True:
    time.sleep(0.05)
"""


async def started_graceful(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path, **env: str
) -> RuntimeHandle:
    """The GRACEFUL app, running with its signal handler in place."""
    (app_dir / "graceful.py").write_text(GRACEFUL)
    spec = make_spec(start_command="python graceful.py", env={"PORT": "8000", **env})
    handle = await runtime.start(await runtime.create(spec))
    records = await logs_until(runtime, handle, "app ready")
    assert any(r.message == "app ready" for r in records), records
    return handle


async def test_stop_waits_for_a_graceful_shutdown_and_no_longer(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> None:
    handle = await started_graceful(runtime, make_spec, app_dir, SHUTDOWN_SECONDS="1")
    started = time.monotonic()
    await runtime.stop(handle, timeout=10)
    took = time.monotonic() - started
    assert 0.9 <= took < 5, took  # the app's own shutdown, not the whole grace period
    status = await runtime.status(handle)
    assert (status.state, status.phase, status.exit_code) == (
        InstanceState.exited,
        Phase.runtime,
        0,
    ), status
    records = await logs_until(runtime, handle, "shut down cleanly")
    messages = [r.message for r in records if r.stream == "stdout"]
    assert messages.count("received SIGTERM, finishing requests") == 1, messages
    assert messages[-1] == "shut down cleanly", messages


async def test_stop_kills_an_app_that_ignores_sigterm_after_the_timeout(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> None:
    handle = await started_graceful(runtime, make_spec, app_dir, IGNORE_TERM="1")
    started = time.monotonic()
    await runtime.stop(handle, timeout=2)
    took = time.monotonic() - started
    assert 1.9 <= took < 8, took
    status = await runtime.status(handle)
    assert status.state is InstanceState.exited and status.exit_code == 137, status


async def test_removing_a_running_container_sends_sigterm_first(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path, gateway: str
) -> None:
    with _listener(gateway) as notified:
        notified.settimeout(5)
        target = f"{gateway}:{notified.getsockname()[1]}"
        handle = await started_graceful(
            runtime, make_spec, app_dir, NOTIFY=target, SHUTDOWN_SECONDS="0.2"
        )
        await runtime.remove(handle)
        assert (await runtime.status(handle)).state is InstanceState.missing
        connection, _ = await asyncio.to_thread(notified.accept)  # it got SIGTERM meanwhile
        with connection:
            connection.settimeout(5)
            assert await asyncio.to_thread(connection.recv, 16) == b"SIGTERM"


async def test_out_of_memory_is_reported(runtime: DockerRuntime, make_spec: MakeSpec) -> None:
    spec = make_spec(
        start_command="python -c 'bytearray(512 * 1024 * 1024)'", memory_mb=64, pids_limit=64
    )
    handle = await runtime.start(await runtime.create(spec))
    status = await wait_for(runtime, handle, InstanceState.exited)
    assert status.exit_code == 137
    assert status.error and "out of memory (limit 64 MiB)" in status.error


async def test_missing_image_is_a_clear_failure(
    runtime: DockerRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(image="localhost/devpush-no-such-image:1")
    with pytest.raises(RuntimeFailure, match="runner image localhost/devpush-no-such-image:1"):
        await runtime.create(spec)


async def test_unreachable_engine_is_a_runtime_failure(tmp_path: Path) -> None:
    rt = DockerRuntime(url=f"unix://{tmp_path}/nope.sock", network="n", default_image="i")
    try:
        with pytest.raises(RuntimeFailure, match="cannot reach the container engine"):
            await rt.describe()
    finally:
        with contextlib.suppress(RuntimeFailure):
            await rt.close()


async def test_describe_names_the_engine(runtime: DockerRuntime) -> None:
    info = await runtime.describe()
    assert info["backend"] == "docker"
    assert info["engine"]["api_version"]
    assert "Podman Engine" in info["engine"]["components"]


async def test_a_transient_archive_upload_failure_is_retried_with_a_fresh_archive(
    runtime: DockerRuntime, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Podman's copy helper sometimes answers 500 under load; the upload is sent again."""
    from aiodocker.containers import DockerContainer
    from aiodocker.exceptions import DockerError

    real = DockerContainer.put_archive
    calls: list[bool] = []

    async def flaky(self: DockerContainer, path: str, data: object) -> object:
        calls.append(True)
        if len(calls) == 1:
            close = getattr(data, "close", None)
            if close:
                close()  # as the HTTP client does with a file it sent
            raise DockerError(500, {"message": "passing bulk input to subprocess: broken pipe"})
        return await real(self, path, data)

    monkeypatch.setattr(DockerContainer, "put_archive", flaky)
    spec = make_spec()
    handle = await runtime.create(spec)
    assert len(calls) == 2  # the source, twice
    handle = await runtime.start(handle)
    response = await get_when_ready(f"http://{handle.upstream}/")
    assert response.text == f"hello from {spec.deployment_id}"
