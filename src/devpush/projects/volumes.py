"""A project's persistent volumes: what may be declared (a name and an absolute mount path,
optionally a size in MiB), in the project's settings or in devpush.toml `[[volumes]]`.

Every environment of the project has its own copy of each volume, kept across redeploys,
rollbacks and platform restarts; a preview deployment (a pull request, or a branch outside every
environment) gets an empty scratch directory at the mount path instead, removed with it. The
runtimes place the data (runtime/volumes.py)."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from devpush.runtime.base import VolumeMount

MAX_VOLUMES = 10
MAX_SIZE_MB = 1024 * 1024
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# Where the sandbox, the runner image or the system keep what apps rely on.
RESERVED = (
    "/app",
    "/bin",
    "/boot",
    "/dev",
    "/devpush",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var/run",
)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            "a volume name is 1 to 40 lowercase letters, digits and '-', starting with a "
            "letter or digit"
        )
    return name


def check_mount_path(path: object) -> str:
    """An absolute, normal path outside the system's and the platform's directories."""
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 255:
        raise ValueError("a mount path is absolute, like /data (at most 255 characters)")
    if "\x00" in path or posixpath.normpath(path) != path or path.startswith("//"):
        raise ValueError(f"{path[:80]!r} is not a normal path: no '..', '.', '//' or trailing '/'")
    for reserved in RESERVED:
        if path == reserved or path.startswith(reserved + "/") or reserved.startswith(path + "/"):
            raise ValueError(f"{path} overlaps {reserved}, which the system or devpush uses")
    if path == "/":
        raise ValueError("a volume can't be mounted over /")
    return path


def check_size(size: object) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE_MB:
        raise ValueError(f"size_mb is a whole number of MiB from 1 to {MAX_SIZE_MB}")
    return size


def check_set(volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The volumes of one project together: at most MAX_VOLUMES, names and mount paths unique,
    no mount path inside another."""
    if len(volumes) > MAX_VOLUMES:
        raise ValueError(f"at most {MAX_VOLUMES} volumes per project")
    names = [v["name"] for v in volumes]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two volumes are named {name!r}")
    paths = [v["mount_path"] for v in volumes]
    for path in paths:
        for other in paths:
            if path == other and paths.count(path) > 1:
                raise ValueError(f"two volumes are mounted at {path}")
            if other.startswith(path + "/"):
                raise ValueError(f"the volume at {other} would sit inside the one at {path}")
    return volumes


def declared(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The volumes a deployment's recorded config declares (each a name, mount_path, size_mb)."""
    return [dict(v) for v in config.get("volumes") or [] if isinstance(v, dict)]


def mounts(config: dict[str, Any], environment_id: str | None) -> tuple[VolumeMount, ...]:
    """What a deployment mounts: its environment's copies, or scratch ones (environment_id
    None: a preview)."""
    return tuple(
        VolumeMount(
            name=v["name"],
            mount_path=v["mount_path"],
            environment_id=environment_id,
            size_mb=v.get("size_mb"),
        )
        for v in declared(config)
    )
