"""The docker runtime: one container per deployment, driven through the Docker Engine API.

Production talks to Docker through a socket proxy; tests talk to Podman's Docker-compatible API.
The container joins the runner network and the proxy reaches it at `<container IP>:<port>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tarfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from devpush.errors import RuntimeFailure
from devpush.runtime import docker_volumes, netns
from devpush.runtime.base import (
    CA_ENV,
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
from devpush.runtime.docker_container import (
    CA_PATH,
    LABEL_DEPLOYMENT,
    LABEL_LANGUAGE,
    LABEL_MANAGED,
    LABEL_MEMORY,
    LABEL_OWNER,
    LABEL_PORT,
    LABEL_PROJECT,
    LABEL_REPLICA,
    MIB,
    container_config,
    container_name,
    container_status,
    copy_app,
    inspect_container,
    open_gate,
    put_source_archive,
    read_phase,
)
from devpush.runtime.docker_engine import (
    create_trees_volume,
    delete_trees_volume,
    engine_errors,
    require_image,
    runner_toolchains,
    trees_volume,
    update_memory,
)
from devpush.runtime.docker_exec import run_exec
from devpush.runtime.docker_logs import engine_logs
from devpush.runtime.docker_stats import parse_stats

CACHE_VOLUME = "devpush-build-cache"  # package caches shared by builds, at /devpush/cache
REMOVE_GRACE = 5.0  # seconds a running container has to exit on SIGTERM when it is removed
_Toolchains = list[Toolchain]  # aliases: inside DockerRuntime, `list` is a method
_Ports = list[int]


class DockerRuntime:
    """Runs each deployment in its own container. See `devpush.runtime.base` for the contract."""

    name = "docker"

    def __init__(
        self,
        *,
        url: str,
        network: str,
        default_image: str,
        owner: str | None = None,
        ca_bundle: Path | None = None,
        cache_volume: str | None = CACHE_VOLUME,
        isolation: str = "auto",
        entrypoint_mode: str | None = None,
    ) -> None:
        self.url = url
        # "build": the container runs install, build and pre-deploy only (the swarm runtime's
        # build container); None: everything, then the app.
        self.entrypoint_mode = entrypoint_mode
        # Containers of one runner network could reach each other directly: each one's port
        # on the bridge is isolated after it starts, where the engine is local (netns.py).
        self.isolate_ports, self.isolation_note = netns.container_ports_isolatable(url, isolation)
        self.ca_bundle = ca_bundle if ca_bundle and ca_bundle.is_file() else None
        self.cache_volume = cache_volume
        self.network = network
        self.default_image = default_image
        # Several platforms may share one engine: each lists (and so reconciles) only the
        # containers it labelled with its own owner id.
        self.owner = owner
        self._client: aiodocker.Docker | None = None  # built on first use, inside the loop
        self._app_limited: set[str] = set()  # containers whose build limits were lowered

    def _docker(self) -> aiodocker.Docker:
        if self._client is None:
            timeout = aiohttp.ClientTimeout(total=120, sock_connect=10)
            self._client = aiodocker.Docker(url=self.url, timeout=timeout)
        return self._client

    def _container(self, handle: RuntimeHandle) -> DockerContainer:
        return self._docker().containers.container(handle.id)

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Turn engine and transport errors into RuntimeFailure with a message for people."""
        return engine_errors(action, url=self.url, network=self.network)

    async def create(self, spec: RuntimeSpec) -> RuntimeHandle:
        source_dir = spec.source_dir.resolve()
        if not source_dir.is_dir():
            raise RuntimeFailure(f"source directory {source_dir} does not exist")
        return await self._create(spec, source_dir)

    async def replicate(self, source: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        """A container for replica `spec.replica` with a copy of `source`'s built /app (read
        out of it through the archive endpoint); it runs no build."""
        if spec.replica < 1:
            raise RuntimeFailure("replicate() makes replicas 1 and up; replica 0 is create()d")
        run = replace(
            spec,
            install_command=None,
            build_command=None,
            pre_deploy_command=None,
            install_cache=None,
        )
        return await self._create(run, None, copy_from=source)

    async def _create(
        self, spec: RuntimeSpec, source_dir: Path | None, copy_from: RuntimeHandle | None = None
    ) -> RuntimeHandle:
        image = spec.image or self.default_image
        name = container_name(spec.deployment_id, spec.replica)
        docker = self._docker()
        with self._errors(f"creating container {name}"):
            await require_image(docker, image)
            # A job that runs twice finds its own container: replace it with a fresh one.
            await self._delete(docker.containers.container(name))
            config = container_config(
                spec, image=image, network=self.network, owner=self.owner, gate=self.isolate_ports
            )
            if self.ca_bundle is not None:
                config["Env"] += [f"{name}={CA_PATH}" for name in CA_ENV]
            if self.entrypoint_mode:
                config["Cmd"].append(self.entrypoint_mode)
            mounts = await docker_volumes.mounts(
                docker, spec.project_id, spec.volumes, image=image, owner=self.owner
            )
            if self.cache_volume:
                await create_trees_volume(docker, spec.project_id, self.owner)
                mounts += [
                    {"Type": "volume", "Source": self.cache_volume, "Target": "/devpush/cache"},
                    {
                        "Type": "volume",
                        "Source": trees_volume(spec.project_id),
                        "Target": "/devpush/trees",
                    },
                ]
            if mounts:
                config["HostConfig"]["Mounts"] = mounts
            try:
                container = await docker.containers.create(config, name=name)
            except DockerError as exc:
                if exc.status != 409:
                    raise
                await self._delete(docker.containers.container(name))  # lost a race
                container = await docker.containers.create(config, name=name)
            files = {**spec.support_files}
            if self.ca_bundle is not None:
                files["ca.crt"] = self.ca_bundle
            try:
                if copy_from is not None:
                    await self._copy_app(copy_from, container)
                await put_source_archive(container, source_dir, files)
            except BaseException:
                await self._delete(container)
                raise
        data = {
            "name": name,
            "project_id": spec.project_id,
            "port": spec.port,
            "replica": spec.replica,
        }
        return RuntimeHandle(
            backend=self.name, id=container.id, deployment_id=spec.deployment_id, data=data
        )

    async def _copy_app(self, source: RuntimeHandle, target: DockerContainer) -> None:
        try:
            await copy_app(self._docker(), source.id, target)
        except DockerError as exc:
            if exc.status == 404:
                raise RuntimeFailure(f"container {source.id[:12]} is missing") from exc
            raise

    async def start(self, handle: RuntimeHandle) -> RuntimeHandle:
        container = self._container(handle)
        with self._errors(f"starting container {handle.id[:12]}"):
            try:
                await container.start()  # an already running container answers 304: fine
                info = await inspect_container(container)
            except DockerError as exc:
                if exc.status == 404:
                    raise RuntimeFailure(f"container {handle.id[:12]} is missing") from exc
                raise
        pid = (info.get("State") or {}).get("Pid") or 0
        if self.isolate_ports and pid:
            try:
                link = await asyncio.to_thread(netns.isolate_container_port, pid)
                with self._errors(f"opening the fence gate of container {handle.id[:12]}"):
                    await open_gate(container, link)
            except RuntimeFailure:
                with self._errors(f"inspecting container {handle.id[:12]}"):
                    state = (await inspect_container(container)).get("State") or {}
                running = state.get("Running")
                if running:  # a container that already exited has no network left to fence
                    with contextlib.suppress(DockerError):
                        await container.kill()  # never left running unfenced
                    raise
        return replace(handle, upstream=self._upstream(info))

    async def restart(self, handle: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        """Starts the exited container again (its env is in its config): the entrypoint finds
        the build already done in its state directory and runs the start command only."""
        return await self.start(handle)

    def _upstream(self, info: dict[str, Any]) -> str | None:
        """`IP:port` on the runner network, or None when the container has no address now."""
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        ip = (networks.get(self.network) or {}).get("IPAddress")
        labels = (info.get("Config") or {}).get("Labels") or info.get("Labels") or {}
        port = labels.get(LABEL_PORT)
        return f"{ip}:{port}" if ip and port else None

    async def status(self, handle: RuntimeHandle) -> InstanceStatus:
        container = self._container(handle)
        with self._errors(f"inspecting container {handle.id[:12]}"):
            for attempt in range(3):
                try:
                    info = await inspect_container(container)
                except DockerError as exc:
                    if exc.status == 404:
                        return InstanceStatus(state=InstanceState.missing)
                    raise
                state: dict[str, Any] = info.get("State") or {}
                if not state.get("Running") and state.get("Status") in ("created", "configured"):
                    return InstanceStatus(InstanceState.created, error=state.get("Error") or None)
                try:
                    phase = await read_phase(container)
                    break
                except (DockerError, tarfile.TarError) as exc:
                    # Podman cannot copy out of a container that is exiting at this very moment
                    # (HTTP 500 or an empty tar); inspected again, it is seen stopped.
                    if (isinstance(exc, DockerError) and exc.status != 500) or attempt == 2:
                        raise RuntimeFailure(
                            f"reading the phase of container {handle.id[:12]} failed: {exc}"
                        ) from exc
                    await asyncio.sleep(0.05)
        if phase is Phase.runtime and state.get("Running"):
            await self._limit_app(handle.id, info)
        return container_status(info, phase or Phase.build)

    async def _limit_app(self, container_id: str, info: dict[str, Any]) -> None:
        """The build ran under the build's memory limit; the app gets its own, lower one as
        soon as it is seen starting (the engine lowers a running container's cgroup)."""
        labels = (info.get("Config") or {}).get("Labels") or {}
        app_mb = int(labels.get(LABEL_MEMORY) or 0)
        if not app_mb or container_id in self._app_limited:
            return
        with self._errors(f"limiting the memory of container {container_id[:12]}"):
            await update_memory(self._docker(), container_id, app_mb * MIB)
        self._app_limited.add(container_id)

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        with self._errors(f"reading logs of container {handle.id[:12]}"):
            try:
                path = f"containers/{handle.id}/logs"
                async for record in engine_logs(self._docker(), path, follow=follow):
                    yield record
            except DockerError as exc:
                if exc.status == 404:
                    raise RuntimeFailure(f"container {handle.id[:12]} is missing") from exc
                raise

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        """SIGTERM to the container's init (the entrypoint, which passes it on to the app),
        SIGKILL after `timeout`; returns once the container has exited. Idempotent."""
        with self._errors(f"stopping container {handle.id[:12]}"):
            try:
                await self._container(handle).stop(t=math.ceil(timeout))
            except DockerError as exc:
                if exc.status not in (304, 404):
                    raise

    async def remove(self, handle: RuntimeHandle) -> None:
        """Stops a running container first, as the process runtime does (a forced delete alone
        would SIGKILL it), then deletes it with its anonymous volumes. Idempotent."""
        await self.stop(handle, timeout=REMOVE_GRACE)
        with self._errors(f"removing container {handle.id[:12]}"):
            await self._delete(self._container(handle))

    @staticmethod
    async def _delete(container: DockerContainer) -> None:
        try:
            await container.delete(force=True, v=True)
        except DockerError as exc:
            if exc.status != 404:
                raise

    async def list(self) -> list[RuntimeHandle]:
        filters = {"label": [f"{LABEL_MANAGED}=true"]}
        if self.owner:
            filters["label"].append(f"{LABEL_OWNER}={self.owner}")
        with self._errors("listing containers"):
            containers = await self._docker().containers.list(all=True, filters=filters)
        handles = []
        for container in containers:
            fields = ("Labels", "State", "Names", "NetworkSettings")
            info = {k: container[k] for k in fields if k in container}
            labels = info.get("Labels") or {}
            if labels.get(docker_volumes.LABEL_ROLE) == docker_volumes.VOLUME_INIT:
                continue  # a volume's short-lived init, not an instance
            running = info.get("State") == "running"
            handles.append(
                RuntimeHandle(
                    backend=self.name,
                    id=container.id,
                    deployment_id=labels.get(LABEL_DEPLOYMENT, ""),
                    upstream=self._upstream(info) if running else None,
                    data={
                        "name": (info.get("Names") or [""])[0].lstrip("/"),
                        "project_id": labels.get(LABEL_PROJECT, ""),
                        "port": int(labels.get(LABEL_PORT) or 0),
                        "replica": int(labels.get(LABEL_REPLICA) or 0),
                    },
                )
            )
        return handles

    async def provide(self, language: str, spec: str) -> Toolchain | None:
        """Runner images are built by the operator (scripts/runner-images.sh), never here."""
        return None

    async def exec(
        self,
        handle: RuntimeHandle,
        spec: RuntimeSpec,
        command: str,
        *,
        timeout: float,
        output: ExecOutput,
    ) -> ExecResult:
        """An Engine API exec in the running container (runtime/docker_exec.py)."""
        with self._errors(f"running a command in container {handle.id[:12]}"):
            return await run_exec(
                self._docker(), handle.id, spec, command, timeout=timeout, output=output
            )

    async def forget_project(self, project_id: str) -> None:
        """Removes the project's volume of kept install trees."""
        with self._errors(f"removing the build volume of project {project_id}"):
            await delete_trees_volume(self._docker(), project_id)

    async def volumes(self, project_id: str) -> _Volumes:
        with self._errors(f"listing the volumes of project {project_id}"):
            return await docker_volumes.usage(self._docker(), project_id)

    async def delete_volumes(self, project_id: str) -> None:
        with self._errors(f"removing the volumes of project {project_id}"):
            await docker_volumes.delete(self._docker(), project_id)

    async def volume_dir(self, project_id: str, environment_id: str, name: str) -> Path | None:
        """The engine's local directory of the named volume (an engine on this machine)."""
        volume = docker_volumes.volume_name(project_id, environment_id, name)
        try:
            info = await self._docker()._query_json(f"volumes/{volume}")
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise RuntimeFailure(f"inspecting the volume {volume}: {exc.message}") from exc
        except aiohttp.ClientError as exc:
            raise RuntimeFailure(f"inspecting the volume {volume}: {exc!r}") from exc
        path = Path(str(info.get("Mountpoint") or ""))
        return path if info.get("Mountpoint") and path.is_dir() else None

    async def listening(self, handle: RuntimeHandle) -> _Ports:
        """Not known from outside the container: the container's port is the project's."""
        return []

    async def stats(self, handle: RuntimeHandle) -> InstanceStats | None:
        """The engine's one-shot stats of a running container (Podman answers a stopped one
        with an empty body, hence the inspect first)."""
        container = self._container(handle)
        try:
            state = (await inspect_container(container)).get("State") or {}
            if not state.get("Running"):
                return None
            answers = await container.stats(stream=False, timeout=15)
        except DockerError as exc:
            if exc.status in (404, 409):  # gone, or stopped meanwhile
                return None
            raise RuntimeFailure(f"reading the stats of {handle.id[:12]}: {exc.message}") from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RuntimeFailure(f"reading the stats of {handle.id[:12]}: {exc!r}") from exc
        return parse_stats(answers[0]) if answers else None

    async def toolchains(self) -> _Toolchains:
        """The runner images present, by their language and version labels."""
        with self._errors("listing runner images"):
            images = await self._docker().images.list(filters={"label": [LABEL_LANGUAGE]})
        return runner_toolchains(images)

    async def host_address(self) -> str:
        """The runner network's gateway: the host, as its containers reach it."""
        with self._errors(f"inspecting the network {self.network}"):
            info = await (await self._docker().networks.get(self.network)).show()
        for config in (info.get("IPAM") or {}).get("Config") or []:
            if config.get("Gateway"):
                return str(config["Gateway"])
        raise RuntimeFailure(f"the runner network {self.network} has no gateway address")

    async def describe(self) -> dict[str, Any]:
        with self._errors("asking the container engine for its version"):
            version = await self._docker().version()
        return {
            "backend": self.name,
            "url": self.url,
            "network": self.network,
            "default_image": self.default_image,
            "isolation": self.isolation_note,
            "engine": {
                "version": version.get("Version"),
                "api_version": version.get("ApiVersion"),
                "os": version.get("Os"),
                "arch": version.get("Arch"),
                "kernel": version.get("KernelVersion"),
                "components": [c.get("Name") for c in version.get("Components") or []],
            },
        }

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
