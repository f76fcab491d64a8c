"""Shared by the production-operations tests (tests/ops, `pytest -m ops`): Podman with its API
socket and runner image (scripts/podman-setup.sh), and the compose stack's images built
locally (scripts/compose-images.sh). Both are required: when they cannot be set up, the
tests that use them fail."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PODMAN_SOCKET = os.environ.get("DEVPUSH_PODMAN_SOCKET", "/run/devpush-podman/podman.sock")


def _script(name: str, timeout: float) -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def podman_socket() -> str:
    """The Podman API URL, once packages, service, runner image and network exist."""
    _script("podman-setup.sh", timeout=1200)
    return f"unix://{PODMAN_SOCKET}"


@pytest.fixture(scope="session")
def compose_images(podman_socket: str) -> dict[str, str]:
    """DEVPUSH_IMAGE & co: the devpush image and the postgres/redis/traefik stand-ins."""
    output = _script("compose-images.sh", timeout=1800)
    images = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert set(images) == {
        "DEVPUSH_IMAGE",
        "DEVPUSH_POSTGRES_IMAGE",
        "DEVPUSH_REDIS_IMAGE",
        "DEVPUSH_TRAEFIK_IMAGE",
    }, output
    return images
