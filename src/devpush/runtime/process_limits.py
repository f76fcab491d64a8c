"""Limits of process-runtime instances: cgroups (v2, else v1) where this machine lets us write
them; ProcessRuntime falls back to setrlimit where it cannot."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devpush.errors import RuntimeFailure
from devpush.runtime.base import RuntimeSpec

MiB = 1024 * 1024
# Runs as root before anything else in the instance: moves this very process into the cgroups
# named before "--" (so every child starts inside them), then execs the rest of the arguments.
# A constant script; the paths arrive as arguments.
# cpuacct: v1 only (v2 accounts CPU in "cpu"), where it is mounted apart from cpu: the
# instance's CPU time for metrics (runtime/process_stats.py). No limit is set through it.
_CONTROLLERS = ("memory", "cpu", "pids", "cpuacct")
BUILD = "build:"  # key prefix of the build stage's cgroups in instance.cgroups
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    memory_mb: int | None
    cpus: float | None
    pids_limit: int | None

    @classmethod
    def of(cls, spec: RuntimeSpec, *, build: bool) -> Limits:
        if build:
            memory = spec.build_memory_mb or spec.memory_mb
            return cls(memory, spec.build_cpus or spec.cpus, spec.pids_limit)
        return cls(spec.memory_mb, spec.cpus, spec.pids_limit)


@dataclass(frozen=True)
class Cgroups:
    """Where instance cgroups go on this machine, and which controllers they get."""

    version: int
    parents: dict[str, Path]  # controller -> directory that holds the instance cgroups

    @property
    def label(self) -> str:
        return f"cgroup v{self.version}"

    def create(self, instance_id: str, limits: Limits) -> dict[str, str]:
        # v1 cgroups go next to the worker's own (inside whatever limits the host gave it);
        # v2 forbids controllers in a group that holds processes, hence one devpush/ parent.
        name = instance_id if self.version == 2 else f"devpush-{instance_id}"
        dirs = {ctrl: parent / name for ctrl, parent in self.parents.items()}
        for directory in set(dirs.values()):
            directory.mkdir(parents=True, exist_ok=True)
            if _read(directory / "cgroup.procs").split():  # never share: stop() kills it all
                raise RuntimeFailure(f"cgroup {directory} is in use by another instance")
        if self.version == 2:
            _limit_v2(dirs, limits)
        else:
            _limit_v1(dirs, limits)
        return {ctrl: str(directory) for ctrl, directory in dirs.items()}


def _limit_v2(dirs: dict[str, Path], spec: Limits) -> None:
    if spec.memory_mb and "memory" in dirs:
        _write(dirs["memory"] / "memory.max", str(spec.memory_mb * MiB))
        if (dirs["memory"] / "memory.swap.max").exists():
            _write(dirs["memory"] / "memory.swap.max", "0")
    if spec.cpus and "cpu" in dirs:
        _write(dirs["cpu"] / "cpu.max", f"{_cpu_quota(spec.cpus)} {_CPU_PERIOD_US}")
    if spec.pids_limit and "pids" in dirs:
        _write(dirs["pids"] / "pids.max", str(spec.pids_limit))


def _limit_v1(dirs: dict[str, Path], spec: Limits) -> None:
    if spec.memory_mb and "memory" in dirs:
        _write(dirs["memory"] / "memory.limit_in_bytes", str(spec.memory_mb * MiB))
        if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():  # no swapping past it
            _write(dirs["memory"] / "memory.memsw.limit_in_bytes", str(spec.memory_mb * MiB))
    if spec.cpus and "cpu" in dirs:
        _write(dirs["cpu"] / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
        _write(dirs["cpu"] / "cpu.cfs_quota_us", str(_cpu_quota(spec.cpus)))
    if spec.pids_limit and "pids" in dirs:
        _write(dirs["pids"] / "pids.max", str(spec.pids_limit))


def _cpu_quota(cpus: float) -> int:
    return max(1000, int(cpus * _CPU_PERIOD_US))


def detect_cgroups(fs_root: Path) -> Cgroups | None:
    """The cgroups we can create here with at least the memory controller, or None."""
    if (fs_root / "cgroup.controllers").is_file():
        return _detect_v2(fs_root)
    return _detect_v1(fs_root)


def _detect_v2(fs_root: Path) -> Cgroups | None:
    parent = fs_root / "devpush"
    available = _read(fs_root / "cgroup.controllers").split()
    wanted = [ctrl for ctrl in _CONTROLLERS if ctrl in available]
    try:
        parent.mkdir(exist_ok=True)
        for group in (fs_root, parent):
            enabled = _read(group / "cgroup.subtree_control").split()
            for ctrl in wanted:
                if ctrl not in enabled:
                    # The kernel may refuse one (e.g. a delegated tree); the re-read below decides.
                    with contextlib.suppress(OSError):
                        _write(group / "cgroup.subtree_control", f"+{ctrl}")
        enabled = _read(parent / "cgroup.subtree_control").split()
    except OSError:
        return None
    if "memory" not in enabled:
        return None
    return Cgroups(2, {ctrl: parent for ctrl in wanted if ctrl in enabled})


def _detect_v1(fs_root: Path) -> Cgroups | None:
    own: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for ctrl in controllers.split(","):
            own[ctrl] = path
    parents: dict[str, Path] = {}
    for ctrl in _CONTROLLERS:
        parent = fs_root / ctrl / own.get(ctrl, "/").lstrip("/")
        if ctrl in own and (parent / "cgroup.procs").is_file() and os.access(parent, os.W_OK):
            parents[ctrl] = parent
    return Cgroups(1, parents) if "memory" in parents else None


def cgroup_members(dirs: dict[str, str]) -> set[int]:
    pids: set[int] = set()
    for directory in set(dirs.values()):
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(pid) for pid in _read(Path(directory) / "cgroup.procs").split())
    return pids


def stop_all(members: Callable[[], set[int]]) -> set[int]:
    """SIGSTOP every process `members()` names, and again until it names none not stopped
    yet (a stopped process can't fork, so this ends). Killed one by one afterwards, none of
    them runs again in between: a shell whose child died first can't go on to its next
    command. Returns the pids stopped."""
    stopped: set[int] = set()
    for _ in range(100):
        fresh = members() - stopped
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= fresh
    return stopped


def cgroup_kill(dirs: dict[str, str]) -> None:
    for directory in set(dirs.values()):
        kill = Path(directory) / "cgroup.kill"  # v2, Linux 5.14+: kills the whole group at once
        if kill.exists():
            _write(kill, "1")
    stop_all(lambda: cgroup_members(dirs))  # without cgroup.kill: all stopped, then killed
    for _ in range(100):
        pids = cgroup_members(dirs)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    raise RuntimeFailure(f"processes {sorted(cgroup_members(dirs))} survived SIGKILL")


def cgroup_oom_killed(dirs: dict[str, str], controller: str = "memory") -> bool:
    if controller not in dirs:
        return False
    for name in ("memory.events", "memory.oom_control"):  # v2, v1
        with contextlib.suppress(FileNotFoundError):
            for line in _read(Path(dirs[controller]) / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
    return False


def cgroup_remove(dirs: dict[str, str]) -> None:
    for directory in set(dirs.values()):
        for attempt in range(100):  # the kernel may still be tearing down the last processes
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if attempt == 99:
                    raise RuntimeFailure(f"cannot remove cgroup {directory}: {exc}") from exc
                time.sleep(0.02)


def create_cgroups(cgroups: Cgroups | None, instance_id: str, spec: RuntimeSpec) -> dict[str, str]:
    """The app's cgroups, plus the build stage's own (keys prefixed `build:`) when the
    spec has a build phase."""
    if cgroups is None:
        return {}
    dirs = cgroups.create(instance_id, Limits.of(spec, build=False))
    if has_build(spec):
        build = cgroups.create(f"{instance_id}-build", Limits.of(spec, build=True))
        dirs |= {BUILD + ctrl: path for ctrl, path in build.items()}
    return dirs


def has_build(spec: RuntimeSpec) -> bool:
    return bool(spec.install_command or spec.build_command or spec.pre_deploy_command)


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    path.write_text(value)
