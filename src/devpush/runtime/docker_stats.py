"""A container's CPU time and memory from the engine's one-shot stats
(`GET /containers/{id}/stats?stream=false`), which Docker and Podman both answer: cumulative CPU
nanoseconds in `cpu_stats.cpu_usage.total_usage`, and `memory_stats.usage` less the inactive
page cache (`inactive_file` on cgroup v2, `total_inactive_file` on v1) as `docker stats` does."""

from __future__ import annotations

from typing import Any

from devpush.runtime.base import InstanceStats


def parse_stats(data: dict[str, Any]) -> InstanceStats | None:
    """None when the engine reports no usage (a stopped container answers zeros)."""
    cpu_ns = ((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = data.get("memory_stats") or {}
    usage = memory.get("usage")
    if not cpu_ns and not usage:
        return None
    extra = memory.get("stats") or {}
    inactive = extra.get("inactive_file", extra.get("total_inactive_file", 0)) or 0
    return InstanceStats(
        cpu_seconds=cpu_ns / 1e9 if cpu_ns is not None else None,
        memory_bytes=max(int(usage) - int(inactive), 0) if usage is not None else None,
    )
