"""`devpush socket-proxy` against the real Podman API socket: the docker runtime works through
it end to end (create, archive upload, start, inspect, streamed logs, stop, remove, list, volumes),
and every call it does not need is refused with 403 and a message, changing nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devpush.runtime.base import RuntimeSpec, VolumeMount
from devpush.runtime.docker import DockerRuntime
from devpush.socketproxy.rules import Refused, check_create, match
from tests.conftest import free_port

pytestmark = pytest.mark.ops

DEVPUSH = str(Path(sys.executable).with_name("devpush"))
RUNNER_IMAGE = "localhost/devpush-runner-python:3.11"
APP = """
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"through the proxy")
print("serving on", os.environ["PORT"], flush=True)
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"""
MANAGED = {"devpush.managed": "true"}


@pytest.fixture(scope="module")
def proxy(podman_socket: str) -> Iterator[str]:
    port = free_port()
    listen = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [DEVPUSH, "socket-proxy", "--listen", listen, "--upstream", podman_socket],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([DEVPUSH, "socket-proxy", "--check", "--listen", listen]).returncode:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the socket proxy did not answer /_ping"
            time.sleep(0.3)
        yield f"http://{listen}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def unmanaged() -> Iterator[str]:
    """A container devpush does not manage (like the platform's own postgres)."""
    name = f"h1-unmanaged-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["podman", "run", "-d", "--name", name, RUNNER_IMAGE, "sleep", "600"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield name
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=120)


def _running(name: str) -> bool:
    result = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Running}}", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip() == "true"


def test_the_docker_runtime_works_through_the_proxy(proxy: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(APP)
    deployment = f"h1sp{uuid.uuid4().hex[:10]}"
    spec = RuntimeSpec(
        deployment_id=deployment,
        project_id="h1-socket-proxy",
        source_dir=source,
        start_command="python app.py",
        env={"PORT": "8000"},
        port=8000,
    )

    async def scenario() -> tuple[str, list[str], list[str], list[str]]:
        runtime = DockerRuntime(url=proxy, network="devpush_runner", default_image=RUNNER_IMAGE)
        try:
            handle = await runtime.create(spec)
            handle = await runtime.start(handle)
            assert handle.upstream, handle
            lines: list[str] = []
            async with asyncio.timeout(90):  # logs follow: streamed through the proxy
                async for record in runtime.logs(handle, follow=True):
                    lines.append(record.message)
                    if record.message.startswith("serving on"):
                        break
            async with httpx.AsyncClient() as client:
                for _ in range(100):
                    try:
                        body = (await client.get(f"http://{handle.upstream}/")).text
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
            listed = [h.deployment_id for h in await runtime.list()]
            await runtime.stop(handle)
            await runtime.remove(handle)
            after = [h.deployment_id for h in await runtime.list()]
            return body, lines, listed, after
        finally:
            await runtime.close()

    body, lines, listed, after = asyncio.run(scenario())
    assert body == "through the proxy"
    assert "serving on 8000" in lines
    assert deployment in listed
    assert deployment not in after


def test_volumes_work_through_the_proxy(proxy: str, tmp_path: Path) -> None:
    """An environment's named volume (made, handed to the runner user by a labelled init
    container, mounted, measured, deleted) and a preview's anonymous one."""
    source = tmp_path / "src"
    source.mkdir()
    project = f"h1vol{uuid.uuid4().hex[:8]}"

    def spec(environment_id: str | None) -> RuntimeSpec:
        return RuntimeSpec(
            deployment_id=f"h1v{uuid.uuid4().hex[:10]}",
            project_id=project,
            source_dir=source,
            start_command="sh -c 'echo kept > /data/note && cat /data/note && id -u'",
            env={"PORT": "8000"},
            port=8000,
            volumes=(VolumeMount("data", "/data", environment_id=environment_id),),
        )

    async def scenario() -> tuple[list[str], list[str], list[Any], list[Any]]:
        runtime = DockerRuntime(url=proxy, network="devpush_runner", default_image=RUNNER_IMAGE)
        seen: list[list[str]] = []
        try:
            for environment_id in ("envprod", None):
                handle = await runtime.start(await runtime.create(spec(environment_id)))
                lines: list[str] = []
                async with asyncio.timeout(90):
                    async for record in runtime.logs(handle, follow=True):
                        lines.append(record.message)
                seen.append(lines)
                assert handle.deployment_id in [h.deployment_id for h in await runtime.list()]
                await runtime.remove(handle)
            usage = await runtime.volumes(project)
            await runtime.delete_volumes(project)
            return seen[0], seen[1], usage, await runtime.volumes(project)
        finally:
            await runtime.close()

    production, preview, usage, after = asyncio.run(scenario())
    assert production[:1] == ["kept"] and preview[:1] == ["kept"], (production, preview)
    assert production[1] != "0"  # the app's user, not root, owns what it wrote
    assert [(u.environment_id, u.name) for u in usage] == [("envprod", "data")]
    assert after == []


def test_a_cron_command_runs_through_the_proxy_as_the_app_user(proxy: str, tmp_path: Path) -> None:
    """Runtime.exec (cron jobs): created, streamed and inspected through the proxy; a
    privileged exec, one as root, or one with a terminal is refused."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(APP)
    spec = RuntimeSpec(
        deployment_id=f"h1x{uuid.uuid4().hex[:10]}",
        project_id="h1-exec",
        source_dir=source,
        start_command="python app.py",
        env={"PORT": "8000"},
        port=8000,
    )

    async def scenario() -> tuple[list[tuple[str, str]], Any, list[str]]:
        runtime = DockerRuntime(url=proxy, network="devpush_runner", default_image=RUNNER_IMAGE)
        lines: list[tuple[str, str]] = []

        async def output(stream: str, line: str) -> None:
            lines.append((stream, line))

        handle = await runtime.start(await runtime.create(spec))
        try:
            async with asyncio.timeout(90):
                async for record in runtime.logs(handle, follow=True):
                    if record.message.startswith("serving on"):
                        break
            result = await runtime.exec(
                handle, spec, "id -u; echo oops >&2; exit 3", timeout=30, output=output
            )
            refusals = []
            async with httpx.AsyncClient(base_url=proxy, timeout=30) as client:
                for body in (
                    {"Cmd": ["id"], "User": "0"},
                    {"Cmd": ["id"], "User": "1000", "Privileged": True},
                    {"Cmd": ["sh"], "User": "1000", "Tty": True},
                ):
                    refusals.append(
                        _refused(await client.post(f"/containers/{handle.id}/exec", json=body))
                    )
            return lines, result, refusals
        finally:
            await runtime.remove(handle)
            await runtime.close()

    lines, result, refusals = asyncio.run(scenario())
    assert result.exit_code == 3, result
    assert ("stderr", "oops") in lines and lines[0][0] == "stdout" and lines[0][1] != "0"
    assert "not root" in refusals[0] and "privileged" in refusals[1]
    assert "terminal" in refusals[2]


def _refused(response: httpx.Response) -> str:
    assert response.status_code == 403, (response.status_code, response.text)
    message = str(response.json()["message"])
    assert message.startswith("devpush socket proxy:")
    return message


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/volumes/prune"),
        ("GET", "/volumes/some-operator-volume"),
        ("GET", "/secrets"),
        ("GET", "/v1.41/info"),
        ("POST", "/images/create?fromImage=docker.io/library/alpine"),
        ("POST", "/build"),
        ("POST", "/networks/create"),
        ("POST", "/containers/abc/attach"),
        ("GET", "/events"),
    ],
)
def test_calls_outside_the_allowlist_are_refused(proxy: str, method: str, path: str) -> None:
    message = _refused(httpx.request(method, f"{proxy}{path}", timeout=30))
    assert "not an allowed Engine API call" in message


@pytest.mark.parametrize(
    ("host_config", "reason"),
    [
        ({"Privileged": True}, "privileged"),
        ({"Binds": ["/:/host"]}, "Binds"),
        ({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x"}]}, "Mounts"),
        ({"Mounts": [{"Type": "volume", "Source": "operator-data", "Target": "/x"}]}, "Mounts"),
        ({"Mounts": [{"Type": "volume", "Target": "/x/../etc"}]}, "Mounts"),
        ({"CapAdd": ["SYS_ADMIN"]}, "CapAdd"),
        ({"Devices": [{"PathOnHost": "/dev/sda"}]}, "Devices"),
        ({"NetworkMode": "host"}, "NetworkMode"),
        ({"PidMode": "host"}, "PidMode"),
        ({"SecurityOpt": ["seccomp=unconfined"]}, "SecurityOpt"),
    ],
)
def test_a_create_escaping_the_sandbox_is_refused(
    proxy: str, host_config: dict[str, object], reason: str
) -> None:
    name = f"h1-refused-{uuid.uuid4().hex[:8]}"
    body = {"Image": RUNNER_IMAGE, "Labels": MANAGED, "HostConfig": host_config}
    response = httpx.post(f"{proxy}/containers/create", params={"name": name}, json=body)
    assert reason in _refused(response)
    exists = subprocess.run(["podman", "container", "exists", name], timeout=60)
    assert exists.returncode == 1  # nothing was created


def test_a_create_without_the_devpush_label_is_refused(proxy: str) -> None:
    response = httpx.post(f"{proxy}/containers/create", json={"Image": RUNNER_IMAGE})
    assert "devpush.managed=true" in _refused(response)


def test_containers_devpush_does_not_manage_are_out_of_reach(proxy: str, unmanaged: str) -> None:
    for method, path in [
        ("POST", f"/containers/{unmanaged}/stop"),
        ("POST", f"/containers/{unmanaged}/kill"),
        ("DELETE", f"/containers/{unmanaged}?force=true"),
        ("GET", f"/containers/{unmanaged}/archive?path=/etc/passwd"),
        ("GET", f"/v1.41/containers/{unmanaged}/logs?stdout=1"),
    ]:
        message = _refused(httpx.request(method, f"{proxy}{path}", timeout=60))
        assert "not managed by devpush" in message
    app_user = {"Cmd": ["id"], "User": "1000:1000", "AttachStdout": True}
    message = _refused(httpx.post(f"{proxy}/containers/{unmanaged}/exec", json=app_user))
    assert "not managed by devpush" in message
    assert _running(unmanaged)  # still there, still running


def test_allowed_reads_answer_as_the_engine_does(proxy: str) -> None:
    assert httpx.get(f"{proxy}/_ping").text == "OK"
    assert "ApiVersion" in httpx.get(f"{proxy}/version").json()
    image = httpx.get(f"{proxy}/images/{RUNNER_IMAGE}/json")
    assert image.status_code == 200 and image.json()["Id"]
    missing = httpx.get(f"{proxy}/containers/h1-no-such-container/json")
    assert missing.status_code == 404  # the engine's answer, passed on


def test_the_cli_checks_its_arguments() -> None:
    bad = subprocess.run(
        [DEVPUSH, "socket-proxy", "--listen", "nowhere"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "use HOST:PORT" in bad.stderr
    upstream = subprocess.run(
        [DEVPUSH, "socket-proxy", "--listen", "127.0.0.1:1", "--upstream", "ftp://x"],
        capture_output=True,
        text=True,
    )
    assert upstream.returncode == 2 and "unsupported upstream" in upstream.stderr
    down = subprocess.run(
        [DEVPUSH, "socket-proxy", "--check", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
    )
    assert down.returncode == 1


def test_rules_accept_the_runtime_calls_and_nothing_more() -> None:
    assert match("GET", "/v1.41/containers/abc/logs")[1] == "abc"
    assert match("PUT", "/containers/devpush-x/archive")[1] == "devpush-x"
    assert match("GET", "/images/localhost/runner:3.12/json")[1] is None
    assert match("POST", "/exec/abc123/start")[1] == "abc123"
    for method, path in [("POST", "/containers/abc/attach"), ("GET", "/containers/abc/export")]:
        with pytest.raises(Refused):
            match(method, path)
    check_create({"Labels": MANAGED, "HostConfig": {"CapDrop": ["ALL"], "NetworkMode": "x"}})
    with pytest.raises(Refused, match="JSON object"):
        check_create(["not", "a", "dict"])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"Name": "anything", "Labels": MANAGED}, "devpush-trees-"),
        ({"Name": "devpush-vol-x1", "Labels": MANAGED, "Driver": "local"}, "only hold"),
        ({"Name": "devpush-trees-x1", "Labels": {}}, "devpush.managed=true"),
        ({"Name": "devpush-trees-x1", "Labels": MANAGED, "Driver": "local"}, "only hold"),
        (
            {"Name": "devpush-trees-x1", "Labels": MANAGED, "DriverOpts": {"device": "/"}},
            "only hold",
        ),
    ],
)
def test_only_project_tree_volumes_may_be_created(
    proxy: str, body: dict[str, object], reason: str
) -> None:
    assert reason in _refused(httpx.post(f"{proxy}/volumes/create", json=body, timeout=30))
    listed = subprocess.run(
        ["podman", "volume", "exists", str(body["Name"])], timeout=60, check=False
    )
    assert listed.returncode == 1  # nothing was created


def test_a_project_tree_volume_is_created_and_removed(proxy: str) -> None:
    name = f"devpush-trees-h1{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{proxy}/volumes/create", json={"Name": name, "Labels": MANAGED}, timeout=30
    )
    assert created.status_code == 201, created.text
    assert httpx.delete(f"{proxy}/volumes/{name}", timeout=30).status_code == 204
    other = httpx.delete(f"{proxy}/volumes/some-operator-volume", timeout=30)
    assert "not an allowed Engine API call" in _refused(other)


def test_runner_images_can_be_listed_by_label(proxy: str) -> None:
    listed = httpx.get(
        f"{proxy}/images/json",
        params={"filters": '{"label": ["devpush.runner.language"]}'},
        timeout=30,
    )
    assert listed.status_code == 200
    assert any("devpush.runner.language" in (i.get("Labels") or {}) for i in listed.json())
