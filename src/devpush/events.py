"""Live updates over Redis Streams: per-project events (deployment created, status, alias) and
per-deployment events (status and log lines). Written after PostgreSQL, read by SSE."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

PROJECT_MAXLEN = 2_000
DEPLOYMENT_MAXLEN = 20_000
MONITOR_STREAM = "devpush:monitor"


def project_stream(project_id: str) -> str:
    return f"devpush:project:{project_id}"


def deployment_stream(deployment_id: str) -> str:
    return f"devpush:deployment:{deployment_id}"


async def publish_project(redis: Redis, project_id: str, kind: str, data: dict[str, Any]) -> None:
    await redis.xadd(
        project_stream(project_id),
        {"type": kind, "data": json.dumps(data, default=str)},
        maxlen=PROJECT_MAXLEN,
        approximate=True,
    )


async def publish_deployment(
    redis: Redis, deployment_id: str, kind: str, data: dict[str, Any]
) -> None:
    await redis.xadd(
        deployment_stream(deployment_id),
        {"type": kind, "data": json.dumps(data, default=str)},
        maxlen=DEPLOYMENT_MAXLEN,
        approximate=True,
    )


async def nudge_monitor(redis: Redis, deployment_id: str) -> None:
    """Wake monitors at once instead of at their next poll."""
    await redis.xadd(
        MONITOR_STREAM, {"deployment_id": deployment_id}, maxlen=1000, approximate=True
    )
