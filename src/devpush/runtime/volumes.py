"""Persistent volumes on the host, for the process runtime: one directory per project,
environment and volume name under `<data>/volumes`, bound into the sandbox at the mount path.

A volume with a size runs on its own ext4 filesystem in a sparse image file, loop-mounted on
its directory, so the kernel enforces the size (`ENOSPC` when full), whatever the host's
filesystem. That needs root, `mkfs.ext4` and loop devices; without them the volume is a plain
directory and its size is reported, not enforced (`VolumeUsage.enforced`). A mount does not
survive a reboot: `ensure` mounts it again before each start.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from devpush.errors import RuntimeFailure
from devpush.runtime.base import VolumeMount, VolumeUsage

log = logging.getLogger("devpush.runtime.volumes")
MiB = 1024 * 1024


def root_of(data_path: Path) -> Path:
    return data_path / "volumes"


def host_dir(root: Path, project_id: str, environment_id: str, name: str) -> Path:
    return root / project_id / environment_id / name


def _image(directory: Path) -> Path:
    return directory.with_name(f"{directory.name}.img")


def can_enforce() -> bool:
    return (
        os.geteuid() == 0
        and Path("/dev/loop-control").exists()
        and shutil.which("mkfs.ext4") is not None
        and shutil.which("mount") is not None
    )


def _run(argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode not in ok:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeFailure(f"cannot {what}: {detail[0][:300]}")


def _mount_sized(directory: Path, size_mb: int) -> None:
    """Give `directory` its own ext4 filesystem of `size_mb` (made once, grown when the size
    grows; a smaller size keeps the data and the larger filesystem). Files already in the
    directory (a restored backup, a size added later) move onto the new filesystem."""
    image = _image(directory)
    fresh = not image.exists()
    if fresh:
        with image.open("wb") as f:
            f.truncate(size_mb * MiB)
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], "format a volume")
        staging = directory.with_name(f".{directory.name}.new")
        staging.mkdir(exist_ok=True)
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(staging)], "mount a volume")
        try:
            shutil.rmtree(staging / "lost+found", ignore_errors=True)
            for entry in list(directory.iterdir()):
                shutil.move(str(entry), staging / entry.name)
        finally:
            _run(["umount", str(staging)], "unmount a volume")
            staging.rmdir()
    elif image.stat().st_size < size_mb * MiB:
        with image.open("r+b") as f:
            f.truncate(size_mb * MiB)
        if os.path.ismount(directory):  # in use: online, where the kernel lets us
            try:
                _run(["losetup", "--set-capacity", _loop_of(image)], "grow a volume")
                _run(["resize2fs", _loop_of(image)], "grow a volume")
            except RuntimeFailure as exc:
                log.warning(
                    "volume keeps its size until no instance uses it",
                    extra={"volume": str(directory), "error": exc.message},
                )
        else:
            _run(["e2fsck", "-f", "-p", str(image)], "check a volume", ok=(0, 1))  # 1: fixed
            _run(["resize2fs", str(image)], "grow a volume")
    if not os.path.ismount(directory):
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(directory)], "mount a volume")


def _loop_of(image: Path) -> str:
    done = subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, timeout=30, check=False
    )
    device = done.stdout.split(":", 1)[0].strip()
    if not device:
        raise RuntimeFailure(f"cannot grow a volume: no loop device holds {image.name}")
    return device


def _own_tree(top: Path, uid: int, gid: int) -> None:
    """Hand every file to the project (after a restore, or when its uid changed)."""
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, gid)
    os.chown(top, uid, gid)


def ensure(root: Path, project_id: str, volume: VolumeMount, uid: int, gid: int) -> Path:
    """The volume's directory, created (and mounted, when sized) and owned by the project."""
    assert volume.environment_id is not None
    directory = host_dir(root, project_id, volume.environment_id, volume.name)
    directory.mkdir(parents=True, exist_ok=True)
    for parent in (directory.parent, directory.parent.parent, root):
        parent.chmod(0o711)  # traversable, not listable: tenants can't see each other's names
    if volume.size_mb and can_enforce():
        _mount_sized(directory, volume.size_mb)
    if os.geteuid() == 0 and directory.stat().st_uid != uid:
        _own_tree(directory, uid, gid)
    directory.chmod(0o750)
    return directory


def _used(directory: Path) -> int:
    if os.path.ismount(directory):
        stat = os.statvfs(directory)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    total = 0
    for base, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                continue
    return total


def usage(root: Path, project_id: str) -> list[VolumeUsage]:
    """Every volume the project has data in, with the bytes used."""
    found = []
    project_dir = root / project_id
    if not project_dir.is_dir():
        return []
    for env_dir in sorted(p for p in project_dir.iterdir() if p.is_dir()):
        for directory in sorted(p for p in env_dir.iterdir() if p.is_dir()):
            mounted = os.path.ismount(directory)
            size = _image(directory).stat().st_size // MiB if mounted else None
            found.append(
                VolumeUsage(
                    environment_id=env_dir.name,
                    name=directory.name,
                    used_bytes=_used(directory),
                    size_mb=size,
                    enforced=mounted,
                )
            )
    return found


def delete(root: Path, project_id: str) -> None:
    """Unmount and delete every volume of the project."""
    project_dir = root / project_id
    if not project_dir.is_dir():
        return
    for env_dir in project_dir.iterdir():
        for directory in env_dir.iterdir():
            if directory.is_dir() and os.path.ismount(directory):
                _run(["umount", "--lazy", str(directory)], "unmount a volume")
    shutil.rmtree(project_dir)
