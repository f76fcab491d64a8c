"""A process-runtime instance's CPU time and memory (metrics/): read from its cgroups (v2
`cpu.stat` and `memory.current`, v1 `cpuacct.usage` and `memory.usage_in_bytes`), and from
its process tree (psutil) for whatever no cgroup of the instance accounts."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil

from devpush.runtime.base import InstanceStats
from devpush.runtime.process_limits import BUILD


def cgroup_stats(cgroups: dict[str, str]) -> tuple[float | None, int | None]:
    """(CPU seconds, memory bytes) from the app's cgroups; None where none accounts it."""
    dirs = {ctrl: Path(d) for ctrl, d in cgroups.items() if not ctrl.startswith(BUILD)}
    cpu: float | None = None
    memory: int | None = None
    for directory in set(dirs.values()):
        if (directory / "cgroup.controllers").is_file():  # v2: one directory, every file
            cpu = _v2_cpu(directory) if cpu is None else cpu
            memory = _v2_memory(directory) if memory is None else memory
    for ctrl in ("cpuacct", "cpu"):  # v1: cpuacct, alone or mounted with cpu
        if cpu is None and ctrl in dirs:
            usage = _read_int(dirs[ctrl] / "cpuacct.usage")
            cpu = usage / 1e9 if usage is not None else None
    if memory is None and "memory" in dirs:
        usage = _read_int(dirs["memory"] / "memory.usage_in_bytes")
        if usage is not None:
            inactive = _stat(dirs["memory"] / "memory.stat").get("total_inactive_file", 0)
            memory = max(usage - inactive, 0)
    return cpu, memory


def tree_stats(procs: list[psutil.Process]) -> tuple[float | None, int | None]:
    """(CPU seconds, resident bytes) summed over the instance's processes (children that
    exited and were waited for included)."""
    if not procs:
        return None, None
    cpu = 0.0
    memory = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            cpu += times.user + times.system + times.children_user + times.children_system
            memory += proc.memory_info().rss
    return cpu, memory


def instance_stats(cgroups: dict[str, str], procs: list[psutil.Process]) -> InstanceStats:
    cpu, memory = cgroup_stats(cgroups)
    if cpu is None or memory is None:
        tree_cpu, tree_memory = tree_stats(procs)
        cpu = tree_cpu if cpu is None else cpu
        memory = tree_memory if memory is None else memory
    return InstanceStats(cpu_seconds=cpu, memory_bytes=memory)


def _v2_cpu(directory: Path) -> float | None:
    usec = _stat(directory / "cpu.stat").get("usage_usec")
    return usec / 1e6 if usec is not None else None


def _v2_memory(directory: Path) -> int | None:
    current = _read_int(directory / "memory.current")
    if current is None:
        return None
    return max(current - _stat(directory / "memory.stat").get("inactive_file", 0), 0)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in lines:
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            found[key] = int(value)
    return found
