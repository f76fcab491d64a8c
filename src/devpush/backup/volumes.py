"""Persistent volumes in a backup. The process runtime's volumes are directories under
`<data>/volumes` (the archive's `volumes/`); the docker runtime's are named volumes, read and
written where the engine keeps them on this machine's disk (`docker-volumes/<name>/`), which
holds for an engine on the same host (`devpush up`). A sized volume's filesystem image is not
archived, only its files: the runtime makes a fresh filesystem of the declared size on first use
and moves the restored files onto it (runtime/volumes.py). Ownership is restored by the runtime
(the project's uid, or the runner user), not taken from the archive."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiodocker
from aiodocker.exceptions import DockerError

from devpush.runtime import volumes as host_volumes
from devpush.runtime.docker_container import LABEL_MANAGED, LABEL_PROJECT, RUNNER_UID
from devpush.runtime.docker_volumes import PREFIX
from devpush.settings import Settings

ARCHIVE_DIR = "volumes"
DOCKER_ARCHIVE_DIR = "docker-volumes"


def process_root(settings: Settings) -> Path:
    return host_volumes.root_of(settings.data_path)


def process_volumes(settings: Settings) -> list[str]:
    """`project/environment/name` of every process-runtime volume, for the manifest."""
    root = process_root(settings)
    return sorted(
        str(path.relative_to(root))
        for path in root.glob("*/*/*")
        if path.is_dir() and not path.name.startswith(".")
    )


async def _docker_mountpoints(settings: Settings) -> dict[str, str]:
    assert settings.docker_host
    async with aiodocker.Docker(url=settings.docker_host) as docker:
        listed = await docker._query_json("volumes")
        found = {}
        for entry in listed.get("Volumes") or []:
            name = str(entry.get("Name") or "")
            if name.startswith(PREFIX):
                found[name] = str(entry.get("Mountpoint") or "")
        return found


def docker_volumes(settings: Settings) -> tuple[dict[str, Path], list[str]]:
    """The docker runtime's volumes whose data is on this disk, and warnings for the others."""
    if not settings.docker_host:
        return {}, []
    try:
        mountpoints = asyncio.run(_docker_mountpoints(settings))
    except (DockerError, OSError) as exc:
        return {}, [f"cannot list the docker runtime's volumes ({exc}); they are not in the backup"]
    readable = {n: Path(m) for n, m in mountpoints.items() if m and os.access(m, os.R_OK)}
    elsewhere = sorted(set(mountpoints) - set(readable))
    warnings = []
    if elsewhere:
        warnings.append(
            f"{len(elsewhere)} docker volumes ({', '.join(elsewhere[:5])}) are not on this "
            "machine's disk, so they are not in the backup: back them up with the engine"
        )
    return readable, warnings


def keep(relative: str) -> bool:
    """Archive a volume's files, not a sized volume's image or its staging directory."""
    name = relative.rsplit("/", 1)[-1]
    return not (name.endswith(".img") or name == "lost+found" or name.endswith(".new"))


def install(settings: Settings, staging: Path) -> list[str]:
    """Put the archive's volumes in place; warnings for what could not be."""
    warnings: list[str] = []
    restored = staging / ARCHIVE_DIR
    if restored.is_dir():
        root = process_root(settings)
        root.mkdir(parents=True, exist_ok=True)
        for project in restored.iterdir():
            target = root / project.name
            if target.exists():
                warnings.append(f"volumes of project {project.name} exist already; kept them")
                continue
            shutil.move(str(project), target)
    docker_dir = staging / DOCKER_ARCHIVE_DIR
    if docker_dir.is_dir():
        names = sorted(p.name for p in docker_dir.iterdir() if p.name.startswith(PREFIX))
        if names and not settings.docker_host:
            warnings.append(
                f"the backup holds {len(names)} docker volumes, and this platform has no "
                "docker runtime (DEVPUSH_DOCKER_HOST); they were not restored"
            )
        elif names:
            warnings += asyncio.run(_install_docker(settings, docker_dir, names))
    return warnings


async def _install_docker(settings: Settings, docker_dir: Path, names: list[str]) -> list[str]:
    assert settings.docker_host
    warnings = []
    async with aiodocker.Docker(url=settings.docker_host) as docker:
        for name in names:
            project_id = name[len(PREFIX) :].split("-", 1)[0]
            body = {"Name": name, "Labels": {LABEL_MANAGED: "true", LABEL_PROJECT: project_id}}
            created = await docker._query_json("volumes/create", method="POST", data=body)
            mountpoint = Path(str(created.get("Mountpoint") or ""))
            if not mountpoint.is_dir() or any(mountpoint.iterdir()):
                warnings.append(f"docker volume {name} is not empty or not on this disk; skipped")
                continue
            await asyncio.to_thread(_copy_owned, docker_dir / name, mountpoint, RUNNER_UID)
    return warnings


def _copy_owned(source: Path, target: Path, uid: int) -> None:
    shutil.copytree(source, target, dirs_exist_ok=True)
    for base, dirs, files in os.walk(target):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, uid)
    os.chown(target, uid, uid)
