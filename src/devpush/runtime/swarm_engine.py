"""The swarm runtime's calls to a swarm manager's Engine API: networks, services (read, changed
and written again when another writer came first), their tasks and the nodes' addresses. Engine
errors are raised as they come (DockerError); the runtime explains them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from devpush.errors import RuntimeFailure
from devpush.runtime.docker_container import LABEL_MANAGED, LABEL_PROJECT
from devpush.runtime.swarm_service import node_address

Spec = dict[str, Any]


async def ensure_network(
    docker: aiodocker.Docker, name: str, driver: str, project_id: str | None = None
) -> None:
    """A network of the platform's, made once: a project's overlay, or the builds' bridge
    (whose containers never reach each other)."""
    try:
        await docker._query_json(f"networks/{name}")
        return
    except DockerError as exc:
        if exc.status != 404:
            raise
    labels = {LABEL_MANAGED: "true"} | ({LABEL_PROJECT: project_id} if project_id else {})
    body: dict[str, Any] = {
        "Name": name,
        "Driver": driver,
        "CheckDuplicate": True,
        "Labels": labels,
    }
    if driver == "bridge":
        body["Options"] = {"com.docker.network.bridge.enable_icc": "false"}
    try:
        await docker._query_json("networks/create", method="POST", data=body)
    except DockerError as exc:
        if exc.status != 409:  # made meanwhile
            raise


async def service(docker: aiodocker.Docker, name: str) -> dict[str, Any] | None:
    try:
        return dict(await docker._query_json(f"services/{name}"))
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise


async def update(
    docker: aiodocker.Docker,
    name: str,
    change: Callable[[Spec], None],
    only_if: Callable[[dict[str, Any]], bool] | None = None,
) -> None:
    """Read, change and write the service's spec; again when another writer came first (the
    engine refuses a stale version), up to 10 times."""
    for attempt in range(10):
        found = await service(docker, name)
        if found is None:
            raise RuntimeFailure(f"service {name} is missing")
        if only_if is not None and not only_if(found):
            return
        spec = found["Spec"]
        change(spec)
        try:
            await docker._query_json(
                f"services/{found['ID']}/update",
                method="POST",
                params={"version": found["Version"]["Index"]},
                data=spec,
            )
            return
        except DockerError as exc:
            if "out of sequence" not in str(exc.message) or attempt == 9:
                raise
        await asyncio.sleep(0.1 * (attempt + 1))


async def delete(docker: aiodocker.Docker, name: str) -> None:
    try:
        await docker._query_json(f"services/{name}", method="DELETE")
    except DockerError as exc:
        if exc.status != 404:
            raise


async def tasks(docker: aiodocker.Docker, name: str) -> list[dict[str, Any]]:
    filters = json.dumps({"service": [name]})
    return list(await docker._query_json("tasks", params={"filters": filters}))


async def addresses(docker: aiodocker.Docker) -> dict[str, str]:
    """Each node's id and the address Traefik reaches its published ports at."""
    return {str(n["ID"]): node_address(n) for n in await docker._query_json("nodes")}


def task_container(found: list[dict[str, Any]], task_id: str | None = None) -> str | None:
    """The container of task `task_id` (else of the lowest running slot), while it runs."""
    for task in sorted(found, key=lambda t: int(t.get("Slot") or 0)):
        if task_id and task["ID"] != task_id:
            continue
        status = task.get("Status") or {}
        container = (status.get("ContainerStatus") or {}).get("ContainerID")
        if status.get("State") == "running" and container:
            return str(container)
    return None
