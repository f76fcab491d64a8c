"""Persistent volumes for the docker runtime: one named volume per project, environment and
volume name, mounted at the volume's path; a preview's scratch volume is anonymous and goes
with its container (removed with `v=True`).

A new named volume belongs to root, and the app runs as the runner user: once, when the volume
is made, a short-lived container of the runner image (no network; labelled devpush-managed, as
the socket proxy requires, and `devpush.role=volume-init`, so `list` never takes it for an
instance) hands it to that user. The engine's local driver
enforces no size here (Docker and Podman only can on XFS with project quotas), so a size is
reported as not enforced.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from devpush.errors import RuntimeFailure
from devpush.runtime.base import VolumeMount, VolumeUsage
from devpush.runtime.docker_container import LABEL_MANAGED, LABEL_OWNER, LABEL_PROJECT, RUNNER_UID

PREFIX = "devpush-vol-"
LABEL_ROLE = "devpush.role"
VOLUME_INIT = "volume-init"
INIT_TIMEOUT = 60


def volume_name(project_id: str, environment_id: str, name: str) -> str:
    return f"{PREFIX}{project_id.lower()}-{environment_id.lower()}-{name}"


async def _exists(docker: aiodocker.Docker, name: str) -> bool:
    try:
        await docker._query_json(f"volumes/{name}")
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def _hand_to_runner(
    docker: aiodocker.Docker, name: str, image: str, labels: dict[str, str]
) -> None:
    config: dict[str, Any] = {
        "Image": image,
        "Labels": {**labels, LABEL_ROLE: VOLUME_INIT},
        "Cmd": ["chown", f"{RUNNER_UID}:{RUNNER_UID}", "/volume"],
        "User": "0:0",
        "HostConfig": {
            "NetworkMode": "none",
            "Mounts": [{"Type": "volume", "Source": name, "Target": "/volume"}],
        },
    }
    try:  # one left by an init that died half-way
        await docker.containers.container(f"{name}-init").delete(force=True)
    except DockerError as exc:
        if exc.status != 404:
            raise
    container = await docker.containers.create(config, name=f"{name}-init")
    try:
        await container.start()
        result = await container.wait(timeout=INIT_TIMEOUT)
        if result.get("StatusCode") != 0:
            raise RuntimeFailure(f"cannot prepare volume {name}: chown exited {result}")
    finally:
        await container.delete(force=True)


async def mounts(
    docker: aiodocker.Docker,
    project_id: str,
    volumes: tuple[VolumeMount, ...],
    *,
    image: str,
    owner: str | None,
) -> list[dict[str, Any]]:
    """The HostConfig.Mounts entries for `volumes`, each environment's volume made (once) and
    handed to the runner user first."""
    found: list[dict[str, Any]] = []
    for volume in volumes:
        if volume.environment_id is None:  # a preview: anonymous, removed with the container
            found.append({"Type": "volume", "Target": volume.mount_path})
            continue
        name = volume_name(project_id, volume.environment_id, volume.name)
        if not await _exists(docker, name):
            labels = {LABEL_MANAGED: "true", LABEL_PROJECT: project_id}
            if owner:
                labels[LABEL_OWNER] = owner
            body = {"Name": name, "Labels": labels}
            await docker._query_json("volumes/create", method="POST", data=body)
            await _hand_to_runner(docker, name, image, labels)
        found.append({"Type": "volume", "Source": name, "Target": volume.mount_path})
    return found


async def usage(docker: aiodocker.Docker, project_id: str) -> list[VolumeUsage]:
    """The project's volumes with the bytes used, as the engine counts them."""
    prefix = f"{PREFIX}{project_id.lower()}-"
    df = await disk_usage(docker)
    found = []
    for entry in df.get("Volumes") or []:
        name = str(entry.get("Name") or "")
        if not name.startswith(prefix):
            continue
        environment_id, _, volume = name[len(prefix) :].partition("-")
        used = (entry.get("UsageData") or {}).get("Size")
        found.append(
            VolumeUsage(
                environment_id=environment_id,
                name=volume,
                used_bytes=max(int(used or 0), 0),
                size_mb=None,
                enforced=False,
            )
        )
    return sorted(found, key=lambda v: (v.environment_id, v.name))


async def disk_usage(docker: aiodocker.Docker, attempts: int = 3) -> dict[str, Any]:
    """The engine's `system/df`. Podman fails it (500, "lstat …: no such file or directory")
    when any volume, another project's too, is removed while it counts: counted again."""
    for attempt in range(1, attempts):
        try:
            return dict(await docker._query_json("system/df"))
        except DockerError as exc:
            if exc.status != 500 or "no such file or directory" not in str(exc.message):
                raise
        await asyncio.sleep(0.2 * attempt)
    return dict(await docker._query_json("system/df"))  # the last attempt's error is raised


async def delete(docker: aiodocker.Docker, project_id: str) -> None:
    """Remove every volume of the project (its containers are gone by then)."""
    prefix = f"{PREFIX}{project_id.lower()}-"
    listed = await docker._query_json("volumes")
    for entry in listed.get("Volumes") or []:
        name = str(entry.get("Name") or "")
        if name.startswith(prefix):
            try:
                await docker._query_json(f"volumes/{name}", method="DELETE", params={"force": "1"})
            except DockerError as exc:
                if exc.status != 404:
                    raise
