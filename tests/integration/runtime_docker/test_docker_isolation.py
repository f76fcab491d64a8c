"""Tenants' containers on the runner network can't reach each other: each container's port on
the bridge is isolated once it starts (the engine is on this machine). The host (Traefik, the
readiness probe) still reaches every container, and the platform's loopback services stay out
of reach (test_docker_runtime.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devpush.errors import RuntimeFailure
from devpush.runtime import docker_container, netns
from devpush.runtime.base import InstanceState
from devpush.runtime.docker import DockerRuntime
from tests.integration.runtime_docker.test_docker_runtime import (
    PROBE,
    MakeSpec,
    get_when_ready,
    logs_until,
    wait_for,
)


def isolated_ports() -> set[str]:
    shown = subprocess.run(
        ["bridge", "-d", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    ports, current = set(), ""
    for line in shown.splitlines():
        if line[:1].isdigit():
            current = line.split(":")[1].strip().split("@")[0]
        elif "isolated on" in line:
            ports.add(current)
    return ports


async def test_one_projects_container_cannot_reach_anothers(
    runtime: DockerRuntime, make_spec: MakeSpec, app_dir: Path
) -> None:
    assert runtime.isolate_ports, runtime.isolation_note
    before = isolated_ports()
    other = await runtime.start(await runtime.create(make_spec(project_id="other-tenant")))
    try:
        assert isolated_ports() - before, "the new container's bridge port is isolated"
        assert other.upstream is not None
        body = (await get_when_ready(f"http://{other.upstream}/")).text
        assert body.startswith("hello from"), body  # the host reaches it
        (app_dir / "probe.py").write_text(PROBE)
        env = {"PORT": "8000", "PROBE_TARGETS": other.upstream}
        prober = await runtime.start(
            await runtime.create(make_spec(start_command="python probe.py", env=env))
        )
        await wait_for(runtime, prober, InstanceState.exited)
        records = await logs_until(runtime, prober, f"probe {other.upstream}")
        results = dict(r.message.split()[1:3] for r in records if r.message.startswith("probe "))
        assert results[other.upstream].startswith("closed:"), results
    finally:
        await runtime.remove(other)
        await runtime.forget_project("other-tenant")


async def test_describe_says_how_containers_are_fenced(runtime: DockerRuntime) -> None:
    described = await runtime.describe()
    assert "isolated" in described["isolation"]
    remote = DockerRuntime(url="http://socket-proxy:2375", network="n", default_image="i")
    assert not remote.isolate_ports and "compose" in remote.isolation_note
    off = DockerRuntime(url="unix:///x.sock", network="n", default_image="i", isolation="off")
    assert not off.isolate_ports


async def test_nothing_runs_before_the_container_is_fenced(
    runtime: DockerRuntime, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch, app_dir: Path
) -> None:
    """The entrypoint waits at the fence gate until the runtime names its isolated link: a
    gate that never opens (here, the runtime names another link) runs none of the app's
    commands, not even its build, and the container ends saying why."""
    monkeypatch.setattr(docker_container, "FENCE_WAIT", 2)
    monkeypatch.setattr(netns, "isolate_container_port", lambda pid: "0")
    spec = make_spec(start_command="echo app-ran", build_command="echo build-ran")
    handle = await runtime.start(await runtime.create(spec))
    status = await wait_for(runtime, handle, InstanceState.exited)
    assert status.exit_code == 125
    lines = [r.message async for r in runtime.logs(handle, follow=False)]
    assert "build-ran" not in lines and "app-ran" not in lines, lines
    assert any("not isolated from the others in time" in line for line in lines), lines
    await runtime.remove(handle)


async def test_a_running_container_that_cannot_be_fenced_is_stopped(
    runtime: DockerRuntime, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(pid: int) -> str:
        raise RuntimeFailure("cannot isolate the container's bridge port vethX: denied")

    monkeypatch.setattr(netns, "isolate_container_port", broken)
    handle = await runtime.create(make_spec())
    with pytest.raises(RuntimeFailure, match="cannot isolate"):
        await runtime.start(handle)
    status = await wait_for(runtime, handle, InstanceState.exited)
    assert status.state is InstanceState.exited  # never left serving unfenced
