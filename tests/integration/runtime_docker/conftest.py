"""Real Podman for the docker runtime's tests: its Docker-compatible API socket, the locally
built runner image and the runner network, all prepared by scripts/podman-setup.sh.

Podman is required, not optional: when it cannot be set up, these tests fail.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiodocker
import pytest

from devpush.runtime.base import RuntimeSpec
from devpush.runtime.docker import DockerRuntime

ROOT = Path(__file__).resolve().parents[3]
SOCKET = os.environ.get("DEVPUSH_PODMAN_SOCKET", "/run/devpush-podman/podman.sock")
URL = f"unix://{SOCKET}"
NETWORK = "devpush_runner"
IMAGE = "localhost/devpush-runner-python:3.11"

# The test app: GET / answers $BODY. It prints its uid so the tests can see who runs it.
APP = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("BODY", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("app uid", os.getuid(), flush=True)
print("app warning on stderr", file=sys.stderr, flush=True)
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(scope="session")
def podman() -> str:
    """The Podman API URL, after making sure packages, service, image and network exist."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "podman-setup.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"podman-setup.sh failed:\n{result.stdout}\n{result.stderr}"
    return URL


@pytest.fixture(scope="session")
async def gateway(podman: str) -> str:
    """The host's address on the runner network, as seen from a deployment."""
    async with aiodocker.Docker(url=podman) as docker:
        info = await (await docker.networks.get(NETWORK)).show()
    return str(info["IPAM"]["Config"][0]["Gateway"])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(APP)
    return source


@pytest.fixture
def project_id() -> str:
    return f"p{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def runtime(podman: str, project_id: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(url=podman, network=NETWORK, default_image=IMAGE)
    try:
        yield rt
    finally:
        # Whatever the test left behind (a failing one too) goes: found by its project label.
        for handle in await rt.list():
            if handle.data.get("project_id") == project_id:
                await rt.remove(handle)
        await rt.forget_project(project_id)  # its volume of kept install trees
        await rt.delete_volumes(project_id)
        await rt.close()


@pytest.fixture
def make_spec(app_dir: Path, project_id: str) -> Callable[..., RuntimeSpec]:
    """A spec for the test app with a fresh deployment id; keyword arguments override."""

    def make(**overrides: object) -> RuntimeSpec:
        deployment_id = f"t{uuid.uuid4().hex[:12]}"
        env = {"PORT": "8000", "BODY": f"hello from {deployment_id}"}
        values: dict[str, object] = {
            "deployment_id": deployment_id,
            "project_id": project_id,
            "source_dir": app_dir,
            "start_command": "python app.py",
            "env": env,
            "port": 8000,
            "memory_mb": 256,
            "cpus": 1.0,
            "pids_limit": 256,
            "labels": {"devpush.environment": "production"},
        }
        values.update(overrides)
        return RuntimeSpec(**values)  # type: ignore[arg-type]

    return make
