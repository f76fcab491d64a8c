"""The docker runtime: one container per deployment, driven through the Docker Engine API.

Production talks to Docker through a socket proxy; tests talk to Podman's Docker-compatible API.
The container joins the runner network and the proxy reaches it at `<container IP>:<port>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import struct
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from devpush.errors import RuntimeFailure
from devpush.runtime import netns
from devpush.runtime.base import (
    CA_ENV,
    ENTRYPOINT,
    PHASE_MARKER,
    InstanceState,
    InstanceStatus,
    LogRecord,
    Phase,
    RuntimeHandle,
    RuntimeSpec,
    Toolchain,
    entrypoint_env,
)

RUNNER_UID = 10001
APP_DIR = "/app"
STATE_DIR = "/devpush/state"
MAX_LINE_BYTES = 64 * 1024
MIB = 1024 * 1024

LABEL_MANAGED = "devpush.managed"
LABEL_OWNER = "devpush.owner"  # which platform (database) the container belongs to
LABEL_DEPLOYMENT = "devpush.deployment"
LABEL_PROJECT = "devpush.project"
LABEL_PORT = "devpush.port"
LABEL_LANGUAGE = "devpush.runner.language"  # on runner images (scripts/runner-images.sh)
LABEL_VERSION = "devpush.runner.version"
LABEL_MEMORY = "devpush.memory_mb"  # the app's limit; the container starts with the build's
LABEL_BUILD_MEMORY = "devpush.build_memory_mb"
CACHE_VOLUME = "devpush-build-cache"  # package caches shared by builds, at /devpush/cache
CA_PATH = "/devpush/ca.crt"

# "2024-05-01T12:34:56Z " (Podman) or "2024-05-01T12:34:56.123456789Z " (Docker)
_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d) ")
_Toolchains = list[Toolchain]  # aliases: inside DockerRuntime, `list` is a method
_Ports = list[int]
_LOG_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


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
    ) -> None:
        self.url = url
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

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn engine and transport errors into RuntimeFailure with a message for people."""
        try:
            yield
        except DockerError as exc:
            raise RuntimeFailure(f"{action}: {self._explain(exc)}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise RuntimeFailure(f"{action}: the container engine failed ({reason})") from exc

    def _explain(self, exc: DockerError) -> str:
        message = str(exc.message).strip()
        if exc.status == 900:
            return f"cannot reach the container engine at {self.url}"
        if "network" in message.lower() and "not found" in message.lower():
            return (
                f"runner network {self.network} is missing; create it with "
                f"scripts/podman-setup.sh or `docker network create {self.network}` ({message})"
            )
        return f"{message} (HTTP {exc.status})"

    async def create(self, spec: RuntimeSpec) -> RuntimeHandle:
        image = spec.image or self.default_image
        name = f"devpush-{spec.deployment_id}"
        source_dir = spec.source_dir.resolve()
        if not source_dir.is_dir():
            raise RuntimeFailure(f"source directory {source_dir} does not exist")
        docker = self._docker()
        with self._errors(f"creating container {name}"):
            await self._require_image(image)
            # A job that runs twice finds its own container: replace it with a fresh one.
            await self._delete(docker.containers.container(name))
            config = _container_config(spec, image=image, network=self.network, owner=self.owner)
            if self.ca_bundle is not None:
                config["Env"] += [f"{name}={CA_PATH}" for name in CA_ENV]
            if self.cache_volume:
                await self._trees_volume(spec.project_id)
                config["HostConfig"]["Mounts"] = [
                    {"Type": "volume", "Source": self.cache_volume, "Target": "/devpush/cache"},
                    {
                        "Type": "volume",
                        "Source": trees_volume(spec.project_id),
                        "Target": "/devpush/trees",
                    },
                ]
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
                await _put_archive(container, source_dir, files)
            except BaseException:
                await self._delete(container)
                raise
        data = {"name": name, "project_id": spec.project_id, "port": spec.port}
        return RuntimeHandle(
            backend=self.name, id=container.id, deployment_id=spec.deployment_id, data=data
        )

    async def _require_image(self, image: str) -> None:
        # Checked up front: an engine may otherwise try to pull the image from a registry.
        try:
            await self._docker().images.inspect(image)
        except DockerError as exc:
            if exc.status == 404:
                raise RuntimeFailure(
                    f"runner image {image} is missing; build it with "
                    "`bash scripts/runner-images.sh` (see runners/README.md)"
                ) from exc
            raise

    async def start(self, handle: RuntimeHandle) -> RuntimeHandle:
        container = self._container(handle)
        with self._errors(f"starting container {handle.id[:12]}"):
            try:
                await container.start()  # an already running container answers 304: fine
                info = await _inspect(container)
            except DockerError as exc:
                if exc.status == 404:
                    raise RuntimeFailure(f"container {handle.id[:12]} is missing") from exc
                raise
        pid = (info.get("State") or {}).get("Pid") or 0
        if self.isolate_ports and pid:
            try:
                await asyncio.to_thread(netns.isolate_container_port, pid)
            except RuntimeFailure:
                with self._errors(f"inspecting container {handle.id[:12]}"):
                    running = ((await _inspect(container)).get("State") or {}).get("Running")
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
                    info = await _inspect(container)
                except DockerError as exc:
                    if exc.status == 404:
                        return InstanceStatus(state=InstanceState.missing)
                    raise
                state: dict[str, Any] = info.get("State") or {}
                if not state.get("Running") and state.get("Status") in ("created", "configured"):
                    return InstanceStatus(InstanceState.created, error=state.get("Error") or None)
                try:
                    phase = await _read_phase(container)
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
        return _status(info, phase or Phase.build)

    async def _limit_app(self, container_id: str, info: dict[str, Any]) -> None:
        """The build ran under the build's memory limit; the app gets its own, lower one as
        soon as it is seen starting (the engine lowers a running container's cgroup)."""
        labels = (info.get("Config") or {}).get("Labels") or {}
        app_mb = int(labels.get(LABEL_MEMORY) or 0)
        if not app_mb or container_id in self._app_limited:
            return
        limit = app_mb * MIB
        with self._errors(f"limiting the memory of container {container_id[:12]}"):
            try:
                await self._docker()._query_json(
                    f"containers/{container_id}/update",
                    method="POST",
                    data={"Memory": limit, "MemorySwap": limit},
                )
            except DockerError as exc:
                if exc.status != 404 or "no such container" in str(exc.message).lower():
                    raise
                # Podman's Docker API has no update; its own API does.
                await self._docker()._query_json(
                    f"libpod/containers/{container_id}/update",
                    method="POST",
                    data={"memory": {"limit": limit, "swap": limit}},
                )
        self._app_limited.add(container_id)

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        params = {"stdout": True, "stderr": True, "follow": follow, "timestamps": True}
        parser = _LogParser()
        with self._errors(f"reading logs of container {handle.id[:12]}"):
            try:
                # The raw multiplexed stream: aiodocker's log() merges stdout and stderr.
                query = self._docker()._query(
                    f"containers/{handle.id}/logs", params=params, timeout=_LOG_TIMEOUT
                )
                async with query as response:
                    async for stream, payload in _frames(response.content):
                        for record in parser.feed(stream, payload):
                            yield record
            except DockerError as exc:
                if exc.status == 404:
                    raise RuntimeFailure(f"container {handle.id[:12]} is missing") from exc
                raise
        for record in parser.flush():
            yield record

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        with self._errors(f"stopping container {handle.id[:12]}"):
            try:
                await self._container(handle).stop(t=math.ceil(timeout))
            except DockerError as exc:
                if exc.status not in (304, 404):
                    raise

    async def remove(self, handle: RuntimeHandle) -> None:
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
                    },
                )
            )
        return handles

    async def provide(self, language: str, spec: str) -> Toolchain | None:
        """Runner images are built by the operator (scripts/runner-images.sh), never here."""
        return None

    async def _trees_volume(self, project_id: str) -> None:
        """Creates the project's trees volume (idempotent), labelled like the containers so a
        platform's volumes can be found by its owner id."""
        labels = {LABEL_MANAGED: "true", LABEL_PROJECT: project_id}
        if self.owner:
            labels[LABEL_OWNER] = self.owner
        body = {"Name": trees_volume(project_id), "Labels": labels}
        await self._docker()._query_json("volumes/create", method="POST", data=body)

    async def forget_project(self, project_id: str) -> None:
        """Removes the project's volume of kept install trees."""
        with self._errors(f"removing the build volume of project {project_id}"):
            try:
                await self._docker()._query_json(
                    f"volumes/{trees_volume(project_id)}", method="DELETE", params={"force": "1"}
                )
            except DockerError as exc:
                if exc.status != 404:
                    raise

    async def listening(self, handle: RuntimeHandle) -> _Ports:
        """Not known from outside the container: the container's port is the project's."""
        return []

    async def toolchains(self) -> _Toolchains:
        """The runner images present, by their language and version labels."""
        with self._errors("listing runner images"):
            images = await self._docker().images.list(filters={"label": [LABEL_LANGUAGE]})
        found = []
        for image in images:
            labels = image.get("Labels") or {}
            tags = [t for t in image.get("RepoTags") or [] if not t.endswith(":<none>")]
            language, version = labels.get(LABEL_LANGUAGE), labels.get(LABEL_VERSION)
            if language and version and tags:
                name = next((t for t in tags if t.endswith(f":{version}")), tags[0])
                found.append(Toolchain(language, version, image=name))
        return found

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


def trees_volume(project_id: str) -> str:
    """The project's own volume of kept install trees (.venv, node_modules by lockfile)."""
    return f"devpush-trees-{project_id.lower()}"


def _status(info: dict[str, Any], phase: Phase) -> InstanceStatus:
    """An inspected, started container's status."""
    state: dict[str, Any] = info.get("State") or {}
    if state.get("Running"):
        running = phase is Phase.runtime
        return InstanceStatus(
            InstanceState.running if running else InstanceState.building, phase=phase
        )
    error = state.get("Error") or None
    labels = (info.get("Config") or {}).get("Labels") or {}
    created_mb = ((info.get("HostConfig") or {}).get("Memory") or 0) // MIB
    limit_mb = int(labels.get(LABEL_MEMORY) or 0) or created_mb
    if phase is not Phase.runtime:
        limit_mb = int(labels.get(LABEL_BUILD_MEMORY) or 0) or created_mb
    raise_it = (
        "; raise the project's build_memory_mb or DEVPUSH_BUILD_MEMORY_MB"
        if phase is not Phase.runtime
        else ""
    )
    if state.get("OOMKilled"):
        error = f"out of memory (limit {limit_mb} MiB){raise_it}" if limit_mb else "out of memory"
    elif state.get("ExitCode") == 137 and limit_mb:
        # Podman on cgroup v1 does not always set OOMKilled when the kernel's OOM killer
        # struck; SIGKILL under a memory limit is most often that.
        error = f"killed (SIGKILL), probably out of memory (limit {limit_mb} MiB){raise_it}"
    return InstanceStatus(
        InstanceState.exited, phase=phase, exit_code=state.get("ExitCode"), error=error
    )


def _container_config(
    spec: RuntimeSpec, *, image: str, network: str, owner: str | None = None
) -> dict[str, Any]:
    env = entrypoint_env(spec, spec.env)
    env |= {"DEVPUSH_APP_DIR": APP_DIR, "DEVPUSH_STATE_DIR": STATE_DIR}
    labels = {
        **spec.labels,
        LABEL_MANAGED: "true",
        LABEL_DEPLOYMENT: spec.deployment_id,
        LABEL_PROJECT: spec.project_id,
        LABEL_PORT: str(spec.port),
    }
    if owner:
        labels[LABEL_OWNER] = owner
    host: dict[str, Any] = {
        "NetworkMode": network,
        "SecurityOpt": ["no-new-privileges"],
        "CapDrop": ["ALL"],
        "RestartPolicy": {"Name": "no"},
    }
    # One container runs build and app: it starts under the build's memory limit, lowered
    # to the app's once the app phase starts (DockerRuntime._limit_app).
    has_build = spec.install_command or spec.build_command or spec.pre_deploy_command
    memory_mb = (spec.build_memory_mb if has_build else None) or spec.memory_mb
    if memory_mb:
        host["Memory"] = host["MemorySwap"] = memory_mb * MIB  # no swap on top
    if spec.memory_mb and memory_mb != spec.memory_mb:
        labels[LABEL_MEMORY] = str(spec.memory_mb)
    if memory_mb:
        labels[LABEL_BUILD_MEMORY] = str(memory_mb)
    if spec.cpus:
        host["NanoCpus"] = int(spec.cpus * 1e9)
    if spec.pids_limit:
        host["PidsLimit"] = spec.pids_limit
    return {
        "Image": image,
        "Cmd": ["/bin/sh", "/devpush/entrypoint.sh"],
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": labels,
        "User": f"{RUNNER_UID}:{RUNNER_UID}",
        "WorkingDir": APP_DIR,
        "ExposedPorts": {f"{spec.port}/tcp": {}},
        "Tty": False,
        "OpenStdin": False,
        "HostConfig": host,
    }


def _source_archive(source_dir: Path, files: dict[str, Path] | None = None) -> IO[bytes]:
    """A tar of the source under app/, and the entrypoint and `files` under devpush/, owned by
    the runner."""

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = RUNNER_UID
        info.uname = info.gname = "app"
        if info.name == "app":
            info.mode = 0o755
        return info

    def source_entry(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
            return None  # devices, fifos: nothing an app needs
        return owned(info)

    def directory(name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        return owned(info)

    archive = tempfile.TemporaryFile()
    try:
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(source_dir, arcname="app", filter=source_entry)
            tar.addfile(directory("devpush"))
            tar.addfile(directory("devpush/state"))
            for name, path in {"entrypoint.sh": ENTRYPOINT, **(files or {})}.items():
                entry = tar.gettarinfo(path, arcname=f"devpush/{name}")
                entry.mode = 0o755 if name == "entrypoint.sh" else 0o644
                with path.open("rb") as f:
                    tar.addfile(owned(entry), f)
    except BaseException:
        archive.close()
        raise
    archive.seek(0)
    return archive


async def _inspect(container: DockerContainer, attempts: int = 5) -> dict[str, Any]:
    """Inspect a container. Podman answers 500 "read /proc/N/cgroup: no such process" when
    the container's process exits during the inspect (a build that fails at once); a moment
    later it is seen stopped, so that answer is retried."""
    for attempt in range(attempts - 1):
        try:
            return dict(await container.show())
        except DockerError as exc:
            if exc.status != 500 or "no such process" not in str(exc.message):
                raise
        await asyncio.sleep(0.05 * (attempt + 1))
    return dict(await container.show())


async def _put_archive(
    container: DockerContainer, source_dir: Path, files: dict[str, Path], attempts: int = 3
) -> None:
    """Upload the source. Podman answers 500 "passing bulk input to subprocess: broken pipe"
    when the helper it copies through loses a race with another container's exit (seen under
    load); the same upload a moment later goes through, and extracting it twice is harmless.
    Each attempt sends a fresh archive: the client closes the file it sent."""
    for attempt in range(attempts):
        archive = await asyncio.to_thread(_source_archive, source_dir, files)
        try:
            await container.put_archive("/", archive)
            return
        except DockerError as exc:
            if exc.status != 500 or attempt == attempts - 1:
                raise
        finally:
            archive.close()
        await asyncio.sleep(0.2 * (attempt + 1))


async def _read_phase(container: DockerContainer) -> Phase | None:
    """The phase the entrypoint last wrote to its state directory, if any."""
    try:
        tar = await container.get_archive(f"{STATE_DIR}/phase")
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise
    with tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        f = tar.extractfile(member) if member else None
        value = f.read(64).decode(errors="replace").strip() if f else ""
    try:
        return Phase(value)
    except ValueError:
        return None


async def _frames(content: aiohttp.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """The engine's multiplexed log stream: an 8-byte header (stream, size), then the bytes."""
    while True:
        try:
            header = await content.readexactly(8)
            stream, size = struct.unpack(">BxxxL", header)
            payload = await content.readexactly(size)
        except asyncio.IncompleteReadError:
            return
        yield stream, payload


class _LogParser:
    """Splits frames into lines per stream, strips the engine's timestamps, follows phases."""

    def __init__(self) -> None:
        # The entrypoint marks each phase on both streams, so each stream follows its own
        # markers and its lines keep the right phase however the engine interleaves them.
        self._phase: dict[str, Phase] = {"stdout": Phase.build, "stderr": Phase.build}
        self._buffers: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._started: dict[str, datetime] = {}
        self._cut: dict[str, bool] = {"stdout": False, "stderr": False}

    def feed(self, stream_id: int, payload: bytes) -> Iterator[LogRecord]:
        stream = "stderr" if stream_id == 2 else "stdout"
        ts, data = _split_timestamp(payload)
        buf = self._buffers[stream]
        if not buf and not self._cut[stream]:
            self._started[stream] = ts  # a line's time is the time its first part arrived
        while data:
            head, newline, data = data.partition(b"\n")
            if not self._cut[stream]:
                buf += head[: MAX_LINE_BYTES - len(buf)]
            if len(buf) >= MAX_LINE_BYTES and not newline:
                self._cut[stream] = True  # drop the rest of this overlong line
            if newline:
                record = self._line(stream, bytes(buf))
                buf.clear()
                self._cut[stream] = False
                self._started[stream] = ts
                if record:
                    yield record

    def flush(self) -> Iterator[LogRecord]:
        for stream, buf in self._buffers.items():
            if buf:
                record = self._line(stream, bytes(buf))
                buf.clear()
                if record:
                    yield record

    def _line(self, stream: str, raw: bytes) -> LogRecord | None:
        message = raw.decode("utf-8", errors="replace")
        if message.startswith(PHASE_MARKER):
            with contextlib.suppress(ValueError):
                self._phase[stream] = Phase(message[len(PHASE_MARKER) :].strip())
                return None
        ts = self._started.get(stream) or datetime.now(UTC)
        return LogRecord(ts=ts, stream=stream, phase=self._phase[stream], message=message)


def _split_timestamp(payload: bytes) -> tuple[datetime, bytes]:
    match = _TIMESTAMP.match(payload)
    if not match:
        return datetime.now(UTC), payload
    base, fraction, zone = match.groups()
    text = base.decode() + "." + (fraction or b"0").decode()[:6].ljust(6, "0")
    text += "+00:00" if zone == b"Z" else zone.decode()
    return datetime.fromisoformat(text).astimezone(UTC), payload[match.end() :]
