"""The metrics API: one deployment's samples over a range, in steps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from devpush.api.deps import PlatformDep, SessionDep
from devpush.auth.deps import PrincipalDep
from devpush.deployments.access import load_deployment
from devpush.metrics import service
from devpush.metrics.schemas import MetricsRead, parse_since, parse_step
from devpush.teams.access import Action

router = APIRouter(tags=["metrics"])


@router.get("/deployments/{deployment_id}/metrics", response_model=MetricsRead)
async def deployment_metrics(
    deployment_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="ISO 8601 time (UTC if no zone), or a duration back from now: 15m, "
            "1h, 7d. Default 1h.",
        ),
    ] = None,
    step: Annotated[
        str | None,
        Query(
            max_length=16,
            description="Seconds per point as a duration: 10s, 1m, 5m, 1h. Default: a step "
            "that gives at most 360 points.",
        ),
    ] = None,
) -> MetricsRead:
    """CPU (percent of one core), memory, restarts, requests by status class and latency
    percentiles of a deployment, oldest first; a step with no sample has no point."""
    deployment, _ = await load_deployment(
        session=session, principal=principal, deployment_id=deployment_id, action=Action.read
    )
    now = datetime.now(UTC)
    interval = round(platform.settings.metrics_interval)
    start = parse_since(since, now)
    seconds = parse_step(step, since=start, now=now, interval=interval)
    points = await service.series(
        session=session, deployment_ids=[deployment.id], since=start, step=seconds
    )
    return MetricsRead(
        deployment_id=deployment.id,
        since=start,
        step=seconds,
        interval=interval,
        points=points,
    )
