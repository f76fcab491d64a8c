"""The swarm runtime: each deployment is a Docker Swarm service whose tasks are its replicas.

The build runs once, in a container of the manager's engine (the docker runtime's, with the
entrypoint's `build` mode), on a bridge network of its own. Its service exists from the start
with no task; once the build succeeded, the built app becomes an image (the runner image, the
built /app and the runtime's files: never the build's env vars) and the service runs one task
of it. `scale` sets how many. Swarm places the tasks on the cluster's nodes, restarts those that
exit (its restart policy) and replaces those whose health check fails; limits are the tasks'
resources. Each task is on its project's overlay network (a project's tasks reach each other,
never another project's) and publishes the app's port on its node (host mode: no virtual IP,
which this kernel's missing IPVS would break, like the routing mesh); Traefik reaches each task
there, so its own health checks and retries work per task.

A handle is the service (`id` its name); `handle.data["build"]` is its build container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiodocker.exceptions import DockerError

from devpush.errors import RuntimeFailure
from devpush.runtime import swarm_engine, swarm_service
from devpush.runtime.base import (
    CA_ENV,
    Endpoint,
    ExecOutput,
    ExecResult,
    InstanceState,
    InstanceStats,
    InstanceStatus,
    LogRecord,
    Phase,
    RuntimeHandle,
    RuntimeSpec,
    Toolchain,
    _Volumes,
)
from devpush.runtime.docker import DockerRuntime
from devpush.runtime.docker_container import (
    CA_PATH,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_PORT,
    LABEL_PROJECT,
)
from devpush.runtime.docker_engine import engine_errors
from devpush.runtime.docker_logs import engine_logs
from devpush.runtime.swarm_service import (
    BUILD_NETWORK,
    LABEL_BUILD,
    LABEL_BUILT,
    app_image,
    build_app_image,
    project_network,
    service_name,
    service_spec,
    task_status,
)

_Toolchains = list[Toolchain]
_Ports = list[int]
_Endpoints = list[Endpoint]


class SwarmRuntime:
    """See the module docstring and `devpush.runtime.base` for the contract."""

    name = "swarm"

    def __init__(
        self,
        *,
        url: str,
        default_image: str,
        owner: str | None = None,
        ca_bundle: Path | None = None,
        isolation: str = "auto",
        drain_seconds: float = 10.0,
        start_period: float = 60.0,
        registry: str | None = None,
    ) -> None:
        self.url = url
        self.registry = registry
        self.owner = owner
        self.drain_seconds = drain_seconds
        self.start_period = start_period
        self.builder = DockerRuntime(
            url=url,
            network=BUILD_NETWORK,
            default_image=default_image,
            owner=owner,
            ca_bundle=ca_bundle,
            isolation=isolation,
            entrypoint_mode="build",
        )
        self._promoting: dict[str, asyncio.Lock] = {}

    def _docker(self) -> Any:
        return self.builder._docker()

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        return engine_errors(action, url=self.url, network=BUILD_NETWORK)

    def _build_handle(self, handle: RuntimeHandle) -> RuntimeHandle:
        return RuntimeHandle(
            backend=self.builder.name,
            id=str(handle.data.get("build") or ""),
            deployment_id=handle.deployment_id,
            data={"project_id": handle.data.get("project_id"), "port": handle.data.get("port")},
        )

    # ---- create, build, promote ----------------------------------------------------------
    async def create(self, spec: RuntimeSpec) -> RuntimeHandle:
        if spec.replica:
            raise RuntimeFailure("the swarm runtime runs replicas as a service's tasks: scale()")
        docker = self._docker()
        name = service_name(spec.deployment_id)
        with self._errors(f"preparing the networks of {name}"):
            await swarm_engine.ensure_network(docker, BUILD_NETWORK, "bridge")
            network = project_network(spec.project_id)
            await swarm_engine.ensure_network(docker, network, "overlay", spec.project_id)
            await swarm_engine.delete(docker, name)  # a job run twice makes its service again
        build = await self.builder.create(spec)
        try:
            with self._errors(f"creating the service {name}"):
                mounts = (await docker.containers.container(build.id).show())["HostConfig"].get(
                    "Mounts"
                ) or []
                volumes = [m for m in mounts if not str(m.get("Target", "")).startswith("/devpush")]
                here = None
                if volumes or not self.registry:
                    here = str((await docker._query_json("info"))["Swarm"]["NodeID"])
                body = service_spec(
                    spec,
                    image=spec.image or self.builder.default_image,
                    owner=self.owner,
                    build_id=build.id,
                    mounts=volumes,
                    drain_seconds=self.drain_seconds,
                    start_period=self.start_period,
                    node=here,
                )
                if self.builder.ca_bundle is not None:
                    env = body["TaskTemplate"]["ContainerSpec"]["Env"]
                    env += [f"{n}={CA_PATH}" for n in CA_ENV]
                await docker._query_json("services/create", method="POST", data=body)
        except BaseException:
            await self.builder.remove(build)
            raise
        data = {
            "name": name,
            "project_id": spec.project_id,
            "port": spec.port,
            "replica": 0,
            "build": build.id,
            # The files its image carries under /devpush besides the entrypoint.
            "files": {k: str(v) for k, v in spec.support_files.items()},
        }
        return RuntimeHandle(
            backend=self.name, id=name, deployment_id=spec.deployment_id, data=data
        )

    async def replicate(self, source: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        raise RuntimeFailure("the swarm runtime runs replicas as a service's tasks: scale()")

    async def start(self, handle: RuntimeHandle) -> RuntimeHandle:
        """Starts the build; the service gets its first task once it succeeded (status())."""
        service = await self._service(handle)
        if service is None:
            raise RuntimeFailure(f"service {handle.id} is missing")
        if not _built(service):
            await self.builder.start(self._build_handle(handle))
        return handle

    async def _promote(self, handle: RuntimeHandle) -> None:
        """The build succeeded: its image goes into the service with one task. Idempotent (a
        second monitor, or a second call, finds the service promoted)."""
        lock = self._promoting.setdefault(handle.id, asyncio.Lock())
        async with lock:
            service = await self._service(handle)
            if service is None or _built(service):
                return
            build_id = str(handle.data.get("build"))
            docker = self._docker()
            tag = app_image(handle.deployment_id, self.registry)
            with self._errors(f"making the image of {handle.id}"):
                info = await docker.containers.container(build_id).show()
                files = {k: Path(v) for k, v in (handle.data.get("files") or {}).items()}
                if self.builder.ca_bundle is not None:
                    files["ca.crt"] = self.builder.ca_bundle
                try:
                    await build_app_image(
                        docker,
                        build_id,
                        base=str(info["Config"]["Image"]),
                        tag=tag,
                        files=files,
                        labels={LABEL_MANAGED: "true", LABEL_DEPLOYMENT: handle.deployment_id},
                    )
                except RuntimeError as exc:
                    raise RuntimeFailure(str(exc)) from exc
                if self.registry:  # for every node to pull
                    repository, _, version = tag.rpartition(":")
                    await docker.images.push(repository, tag=version)

            def promoted(spec: dict[str, Any]) -> None:
                spec["TaskTemplate"]["ContainerSpec"]["Image"] = tag
                spec["Mode"]["Replicated"]["Replicas"] = 1
                spec["Labels"][LABEL_BUILT] = "true"

            await self._update(handle, promoted, only_if=lambda s: not _built(s))

    async def _update(
        self,
        handle: RuntimeHandle,
        change: Callable[[dict[str, Any]], None],
        only_if: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        with self._errors(f"updating the service {handle.id}"):
            await swarm_engine.update(self._docker(), handle.id, change, only_if)

    async def _service(self, handle: RuntimeHandle) -> dict[str, Any] | None:
        with self._errors(f"inspecting the service {handle.id}"):
            return await swarm_engine.service(self._docker(), handle.id)

    async def _tasks(self, handle: RuntimeHandle) -> list[dict[str, Any]]:
        with self._errors(f"listing the tasks of {handle.id}"):
            return await swarm_engine.tasks(self._docker(), handle.id)

    async def _addresses(self) -> dict[str, str]:
        with self._errors("listing the swarm's nodes"):
            return await swarm_engine.addresses(self._docker())

    # ---- the protocol ----------------------------------------------------------------------
    async def status(self, handle: RuntimeHandle) -> InstanceStatus:
        service = await self._service(handle)
        if service is None:
            return InstanceStatus(InstanceState.missing)
        if not _built(service):
            build = await self.builder.status(self._build_handle(handle))
            if build.state is not InstanceState.exited or build.exit_code != 0:
                return build
            await self._promote(handle)
            return InstanceStatus(InstanceState.building, Phase.runtime)
        return task_status(await self._tasks(handle), await self._addresses())

    async def endpoints(self, handle: RuntimeHandle) -> _Endpoints:
        return swarm_service.endpoints(await self._tasks(handle), await self._addresses())

    async def scale(self, handle: RuntimeHandle, count: int) -> None:
        def to(spec: dict[str, Any]) -> None:
            spec["Mode"]["Replicated"]["Replicas"] = count

        await self._update(handle, to)

    async def restart(self, handle: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        """Swarm restarts an exited task itself: wait for its replacement (a forced update
        starts one when swarm has none coming), and return where it answers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        forced = False
        while True:
            status = await self.status(handle)
            if status.state is InstanceState.running:
                return replace(handle, upstream=status.upstream)
            if status.state is InstanceState.missing:
                raise RuntimeFailure(f"service {handle.id} is missing")
            if not forced and loop.time() > deadline - 50:

                def force(spec: dict[str, Any]) -> None:
                    template = spec["TaskTemplate"]
                    template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
                    spec["Mode"]["Replicated"]["Replicas"] = max(
                        1, spec["Mode"]["Replicated"]["Replicas"]
                    )

                await self._update(handle, force)
                forced = True
            if loop.time() > deadline:
                raise RuntimeFailure(f"no task of {handle.id} runs after 60 s")
            await asyncio.sleep(0.5)

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        """The build's lines, then every task's (the service's logs, from the beginning)."""
        build = self._build_handle(handle)
        if build.id:
            with contextlib.suppress(RuntimeFailure):  # removed: its lines are stored already
                async for record in self.builder.logs(build, follow=follow):
                    yield record
        if follow:
            while (service := await self._service(handle)) is not None and not _built(service):
                await asyncio.sleep(0.5)
        elif (service := await self._service(handle)) is None or not _built(service):
            return
        with self._errors(f"reading the logs of {handle.id}"):
            try:
                path = f"services/{handle.id}/logs"
                async for record in engine_logs(self._docker(), path, follow=follow):
                    yield record
            except DockerError as exc:
                if exc.status != 404:
                    raise

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        """No task runs any more: each gets SIGTERM and the service's grace period (the
        drain), then SIGKILL; returns once they have exited. Idempotent."""
        await self.builder.stop(self._build_handle(handle), timeout=timeout)
        if await self._service(handle) is None:
            return
        await self.scale(handle, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, self.drain_seconds) + 10
        while loop.time() < deadline:
            tasks = await self._tasks(handle)
            states = {(t.get("Status") or {}).get("State") for t in tasks}
            if not states & ({"running"} | swarm_service.STARTING):
                return
            await asyncio.sleep(0.3)

    async def remove(self, handle: RuntimeHandle) -> None:
        """The service (its tasks stop first, with a short grace), its build container and the
        built image. Idempotent."""
        if handle.data.get("task"):
            return  # one task of a service: scale() removes tasks
        if await self._service(handle) is not None:
            await self.stop(handle, timeout=5.0)
        with self._errors(f"removing the service {handle.id}"):
            await swarm_engine.delete(self._docker(), handle.id)
        await self.builder.remove(self._build_handle(handle))
        with contextlib.suppress(DockerError, aiohttp.ClientError):
            for _ in range(20):  # the tasks' containers go a moment after their service
                try:
                    await self._docker().images.delete(
                        app_image(handle.deployment_id, self.registry)
                    )
                    break
                except DockerError as exc:
                    if exc.status == 404:
                        break
                    await asyncio.sleep(0.5)
        self._promoting.pop(handle.id, None)

    async def list(self) -> list[RuntimeHandle]:
        labels = [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_OWNER}={self.owner}"] if self.owner else [])
        filters = json.dumps({"label": labels})
        with self._errors("listing services"):
            services = await self._docker()._query_json("services", params={"filters": filters})
        handles = []
        for service in services:
            labels_of = service["Spec"].get("Labels") or {}
            handles.append(
                RuntimeHandle(
                    backend=self.name,
                    id=str(service["Spec"]["Name"]),
                    deployment_id=labels_of.get(LABEL_DEPLOYMENT, ""),
                    data={
                        "name": service["Spec"]["Name"],
                        "project_id": labels_of.get(LABEL_PROJECT, ""),
                        "port": int(labels_of.get(LABEL_PORT) or 0),
                        "replica": 0,
                        "build": labels_of.get(LABEL_BUILD, ""),
                    },
                )
            )
        return handles

    async def _task_container(self, handle: RuntimeHandle) -> str | None:
        """The container of the handle's task (a replica's), else of the lowest running
        slot's, where it runs on this node."""
        task = handle.data.get("task")
        return swarm_engine.task_container(await self._tasks(handle), task)

    async def exec(
        self,
        handle: RuntimeHandle,
        spec: RuntimeSpec,
        command: str,
        *,
        timeout: float,
        output: ExecOutput,
    ) -> ExecResult:
        """An Engine API exec in a running task's container (on this node), as the docker
        runtime makes one."""
        container = await self._task_container(handle)
        if container is None:
            return ExecResult(None, error=f"no task of {handle.id} runs on this node")
        on = replace(self._build_handle(handle), id=container)
        return await self.builder.exec(on, spec, command, timeout=timeout, output=output)

    async def stats(self, handle: RuntimeHandle) -> InstanceStats | None:
        """A running task's container's (on this node), as the docker runtime reads them."""
        container = await self._task_container(handle)
        if container is None:
            return None
        return await self.builder.stats(replace(self._build_handle(handle), id=container))

    async def listening(self, handle: RuntimeHandle) -> _Ports:
        return []

    async def toolchains(self) -> _Toolchains:
        return await self.builder.toolchains()

    async def provide(self, language: str, spec: str) -> Toolchain | None:
        return None

    async def forget_project(self, project_id: str) -> None:
        await self.builder.forget_project(project_id)
        with contextlib.suppress(DockerError, aiohttp.ClientError):
            await self._docker()._query_json(
                f"networks/{project_network(project_id)}", method="DELETE"
            )

    async def volumes(self, project_id: str) -> _Volumes:
        return await self.builder.volumes(project_id)

    async def delete_volumes(self, project_id: str) -> None:
        await self.builder.delete_volumes(project_id)

    async def volume_dir(self, project_id: str, environment_id: str, name: str) -> Path | None:
        return await self.builder.volume_dir(project_id, environment_id, name)

    async def host_address(self) -> str:
        """The gateway of the bridge that a node's tasks reach the host through."""
        with self._errors("inspecting the network docker_gwbridge"):
            info = await self._docker()._query_json("networks/docker_gwbridge")
        for config in (info.get("IPAM") or {}).get("Config") or []:
            if config.get("Gateway"):
                return str(config["Gateway"])
        raise RuntimeFailure("the swarm's docker_gwbridge network has no gateway address")

    async def describe(self) -> dict[str, Any]:
        described = await self.builder.describe()
        with self._errors("asking the engine about its swarm"):
            info = await self._docker()._query_json("info")
        swarm = info.get("Swarm") or {}
        return described | {
            "backend": self.name,
            "network": "a project's own overlay network (devpush-p-<project>)",
            "swarm": {
                "state": swarm.get("LocalNodeState"),
                "manager": swarm.get("ControlAvailable"),
                "nodes": swarm.get("Nodes"),
                "managers": swarm.get("Managers"),
            },
        }

    async def close(self) -> None:
        await self.builder.close()


def _built(service: dict[str, Any]) -> bool:
    return (service.get("Spec", {}).get("Labels") or {}).get(LABEL_BUILT) == "true"
