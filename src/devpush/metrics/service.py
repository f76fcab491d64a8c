"""Storing, reading and rolling up metric samples (the metric_samples table only).

Retention: rows at the sampling interval (`resolution`: DEVPUSH_METRICS_INTERVAL) are kept
FULL_DAYS; older ones are rolled up into 5-minute rows (ROLLUP seconds: averages of CPU and
memory, sums of restarts and requests, request-weighted averages of the percentiles), which are
kept ROLLUP_DAYS. The cleanup job runs `downsample`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.metrics.models import FULL_DAYS, ROLLUP, ROLLUP_DAYS, MetricSample
from devpush.metrics.schemas import MetricPoint

_COLUMNS = tuple(c.name for c in MetricSample.__table__.columns)
_DEFAULTS = {c: 0 for c in _COLUMNS if c == "restarts" or c == "requests" or c[:7] == "status_"}


@dataclass(frozen=True)
class Previous:
    ts: datetime
    cpu_seconds: float | None


async def store(*, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert samples; a slot some other monitor stored already is left as it is."""
    if not rows:
        return 0
    whole = [{c: row.get(c, _DEFAULTS.get(c)) for c in _COLUMNS} for row in rows]
    result = await session.execute(
        insert(MetricSample)
        .values(whole)
        .on_conflict_do_nothing()
        .returning(MetricSample.deployment_id)
    )
    return len(result.all())


async def previous(
    *, session: AsyncSession, deployment_ids: Sequence[str], resolution: int
) -> dict[str, Previous]:
    """Each deployment's latest full-resolution sample (its CPU time, for the next rate)."""
    if not deployment_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT DISTINCT ON (deployment_id) deployment_id, ts, cpu_seconds "
            "FROM metric_samples WHERE resolution = :resolution "
            "AND deployment_id = ANY(:ids) ORDER BY deployment_id, ts DESC"
        ),
        {"resolution": resolution, "ids": list(deployment_ids)},
    )
    return {r.deployment_id: Previous(r.ts, r.cpu_seconds) for r in rows}


def _weighted(column: str) -> str:
    return (
        f"sum({column} * requests) FILTER (WHERE {column} IS NOT NULL) / "
        f"NULLIF(sum(requests) FILTER (WHERE {column} IS NOT NULL), 0)"
    )


_AGGREGATES = (
    "avg(cpu_percent) AS cpu_percent, round(avg(memory_bytes))::bigint AS memory_bytes, "
    "sum(restarts)::int AS restarts, sum(requests)::int AS requests, "
    "sum(status_2xx)::int AS status_2xx, sum(status_3xx)::int AS status_3xx, "
    "sum(status_4xx)::int AS status_4xx, sum(status_5xx)::int AS status_5xx, "
    f"{_weighted('p50_ms')} AS p50_ms, {_weighted('p95_ms')} AS p95_ms, "
    f"{_weighted('p99_ms')} AS p99_ms"
)


async def series(
    *, session: AsyncSession, deployment_ids: Sequence[str], since: datetime, step: int
) -> list[MetricPoint]:
    """Samples since `since`, in buckets of `step` seconds (oldest first); several deployments
    (a project's) are added together per bucket: CPU and memory summed over the deployments."""
    rows = await session.execute(
        text(
            "SELECT bucket, sum(cpu_percent) AS cpu_percent, sum(memory_bytes)::bigint AS "
            "memory_bytes, sum(restarts)::int AS restarts, sum(requests)::int AS requests, "
            "sum(status_2xx)::int AS status_2xx, sum(status_3xx)::int AS status_3xx, "
            "sum(status_4xx)::int AS status_4xx, sum(status_5xx)::int AS status_5xx, "
            "max(p50_ms) AS p50_ms, max(p95_ms) AS p95_ms, max(p99_ms) AS p99_ms FROM ("
            "SELECT deployment_id, to_timestamp(floor(extract(epoch FROM ts) / "
            "CAST(:step AS integer)) * CAST(:step AS integer)) "
            f"AS bucket, {_AGGREGATES} FROM metric_samples "
            "WHERE deployment_id = ANY(:ids) AND ts >= :since "
            "GROUP BY deployment_id, bucket) per_deployment GROUP BY bucket ORDER BY bucket"
        ),
        {"ids": list(deployment_ids), "since": since, "step": step},
    )
    return [
        MetricPoint(
            ts=r.bucket,
            cpu_percent=_round(r.cpu_percent, 2),
            memory_bytes=int(r.memory_bytes) if r.memory_bytes is not None else None,
            restarts=r.restarts,
            requests=r.requests,
            status_2xx=r.status_2xx,
            status_3xx=r.status_3xx,
            status_4xx=r.status_4xx,
            status_5xx=r.status_5xx,
            p50_ms=_round(r.p50_ms, 3),
            p95_ms=_round(r.p95_ms, 3),
            p99_ms=_round(r.p99_ms, 3),
        )
        for r in rows
    ]


async def downsample(*, session: AsyncSession, now: datetime | None = None) -> tuple[int, int]:
    """Roll full-resolution rows older than FULL_DAYS into ROLLUP-second rows, and delete
    rolled-up rows older than ROLLUP_DAYS; returns (rows rolled up, rows deleted). The cutoff
    falls on a ROLLUP boundary, so every rolled-up row is whole; running it twice is harmless."""
    now = now or datetime.now(UTC)
    edge = (now - timedelta(days=FULL_DAYS)).timestamp()
    cutoff = datetime.fromtimestamp(edge - edge % ROLLUP, UTC)
    rolled = await session.execute(
        text(
            "INSERT INTO metric_samples (deployment_id, resolution, ts, project_id, "
            "cpu_percent, memory_bytes, restarts, requests, status_2xx, status_3xx, "
            "status_4xx, status_5xx, p50_ms, p95_ms, p99_ms) "
            f"SELECT deployment_id, {ROLLUP}, "
            f"to_timestamp(floor(extract(epoch FROM ts) / {ROLLUP}) * {ROLLUP}) AS bucket, "
            f"min(project_id), {_AGGREGATES} FROM metric_samples "
            "WHERE resolution < :rollup AND ts < :cutoff GROUP BY deployment_id, bucket "
            "ON CONFLICT DO NOTHING"
        ),
        {"rollup": ROLLUP, "cutoff": cutoff},
    )
    await session.execute(
        text("DELETE FROM metric_samples WHERE resolution < :rollup AND ts < :cutoff"),
        {"rollup": ROLLUP, "cutoff": cutoff},
    )
    deleted = await session.execute(
        text("DELETE FROM metric_samples WHERE resolution = :rollup AND ts < :expired"),
        {"rollup": ROLLUP, "expired": now - timedelta(days=ROLLUP_DAYS)},
    )
    return _count(rolled), _count(deleted)


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _round(value: float | None, digits: int) -> float | None:
    return round(float(value), digits) if value is not None else None
