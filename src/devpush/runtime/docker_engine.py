"""The docker runtime's calls to the engine beside a container's lifecycle: engine errors
explained for people, the runner images (required before a create, listed as toolchains), the
projects' volumes of kept install trees, and lowering a running container's memory limit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from devpush.errors import RuntimeFailure
from devpush.runtime.base import Toolchain
from devpush.runtime.docker_container import (
    LABEL_LANGUAGE,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_VERSION,
)


@contextlib.contextmanager
def engine_errors(action: str, *, url: str, network: str) -> Iterator[None]:
    """Turn engine and transport errors into RuntimeFailure with a message for people."""
    try:
        yield
    except DockerError as exc:
        raise RuntimeFailure(f"{action}: {explain(exc, url=url, network=network)}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise RuntimeFailure(f"{action}: the container engine failed ({reason})") from exc


def explain(exc: DockerError, *, url: str, network: str) -> str:
    message = str(exc.message).strip()
    if exc.status == 900:
        return f"cannot reach the container engine at {url}"
    if "network" in message.lower() and "not found" in message.lower():
        return (
            f"runner network {network} is missing; create it with "
            f"scripts/podman-setup.sh or `docker network create {network}` ({message})"
        )
    return f"{message} (HTTP {exc.status})"


async def require_image(docker: aiodocker.Docker, image: str) -> None:
    # Checked up front: an engine may otherwise try to pull the image from a registry.
    try:
        await docker.images.inspect(image)
    except DockerError as exc:
        if exc.status == 404:
            raise RuntimeFailure(
                f"runner image {image} is missing; build it with "
                "`bash scripts/runner-images.sh` (see runners/README.md)"
            ) from exc
        raise


def runner_toolchains(images: list[dict[str, Any]]) -> list[Toolchain]:
    """The runner images among `images`, by their language and version labels."""
    found = []
    for image in images:
        labels = image.get("Labels") or {}
        tags = [t for t in image.get("RepoTags") or [] if not t.endswith(":<none>")]
        language, version = labels.get(LABEL_LANGUAGE), labels.get(LABEL_VERSION)
        if language and version and tags:
            name = next((t for t in tags if t.endswith(f":{version}")), tags[0])
            found.append(Toolchain(language, version, image=name))
    return found


def trees_volume(project_id: str) -> str:
    """The project's own volume of kept install trees (.venv, node_modules by lockfile)."""
    return f"devpush-trees-{project_id.lower()}"


async def create_trees_volume(docker: aiodocker.Docker, project_id: str, owner: str | None) -> None:
    """Creates the project's trees volume (idempotent), labelled like the containers so a
    platform's volumes can be found by its owner id."""
    labels = {LABEL_MANAGED: "true", LABEL_PROJECT: project_id}
    if owner:
        labels[LABEL_OWNER] = owner
    body = {"Name": trees_volume(project_id), "Labels": labels}
    await docker._query_json("volumes/create", method="POST", data=body)


async def delete_trees_volume(docker: aiodocker.Docker, project_id: str) -> None:
    """Removes the project's trees volume; one already gone is fine."""
    try:
        await docker._query_json(
            f"volumes/{trees_volume(project_id)}", method="DELETE", params={"force": "1"}
        )
    except DockerError as exc:
        if exc.status != 404:
            raise


async def update_memory(docker: aiodocker.Docker, container_id: str, limit: int) -> None:
    """Sets a running container's memory limit (and no swap on top) to `limit` bytes."""
    try:
        await docker._query_json(
            f"containers/{container_id}/update",
            method="POST",
            data={"Memory": limit, "MemorySwap": limit},
        )
    except DockerError as exc:
        if exc.status != 404 or "no such container" in str(exc.message).lower():
            raise
        # Podman's Docker API has no update; its own API does.
        await docker._query_json(
            f"libpod/containers/{container_id}/update",
            method="POST",
            data={"memory": {"limit": limit, "swap": limit}},
        )
