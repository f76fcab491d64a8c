"""The metrics API's query (`since`, `step`) and answer."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from devpush.errors import Invalid
from devpush.metrics.models import ROLLUP_DAYS

_DURATION = re.compile(r"(\d+)(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_POINTS = 2000
MAX_STEP = 86400
DEFAULT_SINCE = 3600
# Steps tried in order when none is given: the first that gives at most AUTO_POINTS points.
AUTO_STEPS = (10, 30, 60, 300, 900, 3600, 21600, 86400)
AUTO_POINTS = 360


def duration(value: str) -> int | None:
    """Seconds of "90s", "5m", "1h", "7d"; None when it is not such a duration."""
    found = _DURATION.fullmatch(value.strip())
    return int(found[1]) * _UNITS[found[2]] if found else None


def parse_since(value: str | None, now: datetime) -> datetime:
    """An ISO 8601 time (UTC when it has no zone) or a duration back from now."""
    if value is None or not value.strip():
        return now - timedelta(seconds=DEFAULT_SINCE)
    seconds = duration(value)
    if seconds is not None:
        since = now - timedelta(seconds=seconds)
    else:
        try:
            since = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(
                f"since={value!r} is neither an ISO 8601 time (2026-12-07T06:00:00Z) nor a "
                "duration back from now (90s, 15m, 1h, 7d)"
            ) from None
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    if since >= now:
        raise Invalid(f"since={value!r} is not in the past")
    if now - since > timedelta(days=ROLLUP_DAYS):
        raise Invalid(f"since={value!r} is too far back: metrics are kept {ROLLUP_DAYS} days")
    return since


def parse_step(value: str | None, *, since: datetime, now: datetime, interval: int) -> int:
    """Seconds per point: at least the sampling interval, at most a day, and at most
    MAX_POINTS points over the range. Without a value, the first of AUTO_STEPS that gives at
    most AUTO_POINTS points."""
    span = (now - since).total_seconds()
    if value is None or not value.strip():
        fits = [s for s in AUTO_STEPS if s >= interval and span / s <= AUTO_POINTS]
        return fits[0] if fits else MAX_STEP
    step = duration(value)
    if step is None:
        raise Invalid(f"step={value!r} is not a duration such as 10s, 1m, 5m or 1h")
    if step < interval:
        raise Invalid(f"step={value!r} is shorter than the sampling interval ({interval}s)")
    if step > MAX_STEP:
        raise Invalid(f"step={value!r} is longer than a day")
    if math.ceil(span / step) > MAX_POINTS:
        raise Invalid(
            f"step={value!r} gives more than {MAX_POINTS} points over this range: "
            "use a longer step or a later since"
        )
    return step


class MetricPoint(BaseModel):
    ts: datetime
    cpu_percent: float | None  # of one core, averaged over the step
    memory_bytes: int | None
    restarts: int
    requests: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class MetricsRead(BaseModel):
    deployment_id: str
    since: datetime
    step: int  # seconds
    interval: int  # the sampling interval, seconds
    points: list[MetricPoint]
