"""The docker runtime's container: its config, labels and paths, the archive of source and
support files uploaded into it, the fence gate and phase files exchanged with it, and its
status read from an inspect."""

from __future__ import annotations

import asyncio
import io
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from devpush.runtime.base import (
    ENTRYPOINT,
    InstanceState,
    InstanceStatus,
    Phase,
    RuntimeSpec,
    entrypoint_env,
)

RUNNER_UID = 10001
APP_DIR = "/app"
STATE_DIR = "/devpush/state"
# The fence gate: the entrypoint runs nothing until this root-owned file names its own veth
# (eth0's iflink), which start() writes once that bridge port is isolated. So no code of the
# app, not even its build, runs before the container is fenced off the others.
FENCE_FILE = "/devpush/fence/port"
FENCE_WAIT = 30  # seconds the entrypoint waits for it before giving up
MIB = 1024 * 1024

LABEL_MANAGED = "devpush.managed"
LABEL_OWNER = "devpush.owner"  # which platform (database) the container belongs to
LABEL_DEPLOYMENT = "devpush.deployment"
LABEL_PROJECT = "devpush.project"
LABEL_PORT = "devpush.port"
LABEL_REPLICA = "devpush.replica"
LABEL_LANGUAGE = "devpush.runner.language"  # on runner images (scripts/runner-images.sh)
LABEL_VERSION = "devpush.runner.version"
LABEL_MEMORY = "devpush.memory_mb"  # the app's limit; the container starts with the build's
LABEL_BUILD_MEMORY = "devpush.build_memory_mb"
CA_PATH = "/devpush/ca.crt"


def container_name(deployment_id: str, replica: int) -> str:
    suffix = f"-r{replica}" if replica else ""
    return f"devpush-{deployment_id}{suffix}"


async def copy_app(docker: aiodocker.Docker, source_id: str, target: DockerContainer) -> None:
    """Copy the built /app of container `source_id` into `target` as it is: owners, modes and
    links (a virtualenv's absolute ones resolve inside the container, never on this machine,
    which only passes the archive on, through a temporary file rather than in memory)."""
    with tempfile.TemporaryFile() as buffer:
        query = docker._query(f"containers/{source_id}/archive", params={"path": APP_DIR})
        async with query as response:
            async for chunk in response.content.iter_chunked(1 << 16):
                await asyncio.to_thread(buffer.write, chunk)
        buffer.seek(0)
        await target.put_archive("/", buffer)


def container_status(info: dict[str, Any], phase: Phase) -> InstanceStatus:
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


def container_config(
    spec: RuntimeSpec, *, image: str, network: str, owner: str | None = None, gate: bool = False
) -> dict[str, Any]:
    env = entrypoint_env(spec, spec.env)
    env |= {"DEVPUSH_APP_DIR": APP_DIR, "DEVPUSH_STATE_DIR": STATE_DIR}
    if gate:
        env |= {"DEVPUSH_FENCE": FENCE_FILE, "DEVPUSH_FENCE_WAIT": str(FENCE_WAIT)}
    labels = {
        **spec.labels,
        LABEL_MANAGED: "true",
        LABEL_DEPLOYMENT: spec.deployment_id,
        LABEL_PROJECT: spec.project_id,
        LABEL_PORT: str(spec.port),
        LABEL_REPLICA: str(spec.replica),
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


def source_archive(source_dir: Path | None, files: dict[str, Path] | None = None) -> IO[bytes]:
    """A tar of the source under app/ (None: no app, a replica's comes from copy_app), and the
    entrypoint and `files` under devpush/, owned by the runner."""

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

    def directory(name: str, root: bool = False) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        return info if root else owned(info)

    archive = tempfile.TemporaryFile()
    try:
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            if source_dir is not None:
                tar.add(source_dir, arcname="app", filter=source_entry)
            # Root's, so the app can't move the fence gate's directory aside.
            tar.addfile(directory("devpush", root=True))
            tar.addfile(directory("devpush/state"))
            tar.addfile(directory("devpush/fence", root=True))
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


async def inspect_container(container: DockerContainer, attempts: int = 5) -> dict[str, Any]:
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


async def put_source_archive(
    container: DockerContainer, source_dir: Path | None, files: dict[str, Path], attempts: int = 3
) -> None:
    """Upload the source. Podman answers 500 "passing bulk input to subprocess: broken pipe"
    when the helper it copies through loses a race with another container's exit (seen under
    load); the same upload a moment later goes through, and extracting it twice is harmless.
    Each attempt sends a fresh archive: the client closes the file it sent."""
    for attempt in range(attempts):
        archive = await asyncio.to_thread(source_archive, source_dir, files)
        try:
            await container.put_archive("/", archive)
            return
        except DockerError as exc:
            if exc.status != 500 or attempt == attempts - 1:
                raise
        finally:
            archive.close()
        await asyncio.sleep(0.2 * (attempt + 1))


async def open_gate(container: DockerContainer, link: str) -> None:
    """Write the fence gate (FENCE_FILE, root's, read-only) naming the isolated link."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = f"{link}\n".encode()
        info = tarfile.TarInfo(FENCE_FILE.lstrip("/"))
        info.size, info.mode = len(data), 0o444
        tar.addfile(info, io.BytesIO(data))
    await container.put_archive("/", archive.getvalue())


async def read_phase(container: DockerContainer) -> Phase | None:
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
