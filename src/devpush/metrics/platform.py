"""The platform's own metrics at /metrics, in Prometheus's text format, for operators' own
Prometheus and Grafana: queued jobs, deployments by status, deploy durations and how far each
event subscriber is behind. Off (404) until DEVPUSH_METRICS_TOKEN is set; then a scrape sends
it as `Authorization: Bearer <token>`."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from arq.constants import default_queue_name
from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import PlatformDep, SessionDep
from devpush.deployments.models import Deployment, Status
from devpush.errors import NotFound, Unauthorized
from devpush.outbox.models import DomainEvent, SubscriberCursor
from devpush.platform import Platform

router = APIRouter()
DURATION_BUCKETS = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DURATION_WINDOW = timedelta(days=7)


class Snapshot(Collector):
    """Metric families read once per scrape (a registry of its own per request)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def check_token(configured: str | None, authorization: str | None) -> None:
    if not configured:
        raise NotFound(
            "/metrics is off: set DEVPUSH_METRICS_TOKEN and scrape with "
            "'Authorization: Bearer <token>'"
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), configured.encode()
    ):
        raise Unauthorized("send DEVPUSH_METRICS_TOKEN as 'Authorization: Bearer <token>'")


@router.get("/metrics", include_in_schema=False)
async def platform_metrics(
    platform: PlatformDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header(max_length=512)] = None,
) -> Response:
    check_token(platform.settings.metrics_token, authorization)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(await collect(platform, session)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def collect(p: Platform, session: AsyncSession) -> list[Metric]:
    return [
        await queue_depth(p),
        await deployments_by_status(session),
        await deploy_durations(session),
        *await subscriber_lag(session),
    ]


async def queue_depth(p: Platform) -> Metric:
    family = GaugeMetricFamily("devpush_jobs_queued", "Jobs waiting in the arq queue (Redis).")
    family.add_metric([], float(await p.redis.zcard(default_queue_name)))
    return family


async def deployments_by_status(session: AsyncSession) -> Metric:
    family = GaugeMetricFamily(
        "devpush_deployments",
        "Deployments by status and conclusion.",
        labels=["status", "conclusion"],
    )
    rows = await session.execute(
        select(Deployment.status, Deployment.conclusion, func.count()).group_by(
            Deployment.status, Deployment.conclusion
        )
    )
    counts = {(status, conclusion): n for status, conclusion, n in rows.all()}
    for status in Status:  # every status, zero included: a series does not vanish
        if not any(s == status for s, _ in counts):
            counts[(status, None)] = 0
    for (status, conclusion), n in sorted(counts.items(), key=str):
        family.add_metric([str(status.value), conclusion.value if conclusion else ""], n)
    return family


async def deploy_durations(session: AsyncSession) -> Metric:
    """From the deployments' recorded timings (`total`: queued to live), those concluded in
    the last DURATION_WINDOW."""
    since = datetime.now(UTC) - DURATION_WINDOW
    rows = await session.execute(
        select(Deployment.timings).where(
            Deployment.concluded_at >= since, Deployment.status == Status.completed
        )
    )
    totals = [
        float(t["total"]) for (t,) in rows.all() if t and isinstance(t.get("total"), int | float)
    ]
    buckets = [
        (repr(bound), float(sum(1 for v in totals if v <= bound))) for bound in DURATION_BUCKETS
    ]
    family = HistogramMetricFamily(
        "devpush_deploy_duration_seconds",
        "Seconds from queued to live (or failed) of deployments concluded in the last 7 days.",
    )
    family.add_metric([], [*buckets, ("+Inf", float(len(totals)))], sum_value=sum(totals))
    return family


async def subscriber_lag(session: AsyncSession) -> list[Metric]:
    events = GaugeMetricFamily(
        "devpush_subscriber_lag_events",
        "Events an outbox subscriber has not delivered yet.",
        labels=["subscriber"],
    )
    seconds = GaugeMetricFamily(
        "devpush_subscriber_lag_seconds",
        "Age of the oldest event an outbox subscriber has not delivered yet (0: none).",
        labels=["subscriber"],
    )
    now = datetime.now(UTC)
    for cursor in (await session.execute(select(SubscriberCursor))).scalars():
        behind = tuple_(DomainEvent.txid, DomainEvent.id) > tuple_(cursor.txid, cursor.event_id)
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(DomainEvent.created_at)).where(behind)
            )
        ).one()
        events.add_metric([cursor.name], float(count))
        seconds.add_metric([cursor.name], (now - oldest).total_seconds() if oldest else 0.0)
    return [events, seconds]
