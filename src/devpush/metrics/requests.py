"""Requests per deployment from Traefik's Prometheus metrics: the per-router counters
(`traefik_router_requests_total`, by status code) and latency histogram
(`traefik_router_request_duration_seconds`), summed over methods and protocols. Traefik's
counters only grow (until it restarts), so each interval stores their deltas, and its
percentiles come from the histogram's bucket deltas over that interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "traefik_router_requests_total"
DURATION_BUCKET = "traefik_router_request_duration_seconds_bucket"
CLASSES = ("2xx", "3xx", "4xx", "5xx")


@dataclass
class RouterCounters:
    """One router's cumulative counts: by status class ("2xx", ..., "other"), and the latency
    histogram's cumulative buckets by upper bound (the `le` label: "0.1", ..., "+Inf")."""

    codes: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"codes": self.codes, "buckets": self.buckets}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RouterCounters:
        return cls(dict(value.get("codes") or {}), dict(value.get("buckets") or {}))


@dataclass(frozen=True)
class RequestStats:
    """One router over one interval."""

    requests: int
    classes: dict[str, int]  # "2xx" .. "5xx"
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def status_class(code: str) -> str:
    return f"{code[0]}xx" if len(code) == 3 and code[0] in "2345" else "other"


def parse(text: str) -> dict[str, RouterCounters]:
    """Router name (its provider suffix, `@file`, dropped) -> cumulative counters."""
    routers: dict[str, RouterCounters] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            router = sample.labels.get("router")
            if not router or sample.name not in (REQUESTS, DURATION_BUCKET):
                continue
            counters = routers.setdefault(router.split("@", 1)[0], RouterCounters())
            if sample.name == REQUESTS:
                key = status_class(sample.labels.get("code", ""))
                counters.codes[key] = counters.codes.get(key, 0.0) + sample.value
            else:
                le = _bound_key(sample.labels.get("le", "+Inf"))
                counters.buckets[le] = counters.buckets.get(le, 0.0) + sample.value
    return routers


def delta(previous: RouterCounters | None, current: RouterCounters) -> RouterCounters:
    """What the interval added. A counter lower than before means Traefik restarted (or the
    router was made again): all of the current count is new."""
    if previous is None:
        return RouterCounters()
    reset = any(v < previous.codes.get(k, 0.0) for k, v in current.codes.items()) or any(
        v < previous.buckets.get(k, 0.0) for k, v in current.buckets.items()
    )
    if reset:
        return RouterCounters(dict(current.codes), dict(current.buckets))
    return RouterCounters(
        {k: v - previous.codes.get(k, 0.0) for k, v in current.codes.items()},
        {k: v - previous.buckets.get(k, 0.0) for k, v in current.buckets.items()},
    )


def quantile(q: float, buckets: dict[str, float]) -> float | None:
    """The q-quantile (seconds) of cumulative histogram buckets, interpolated linearly within
    its bucket as Prometheus's histogram_quantile does; None without observations. Past the
    highest finite bound, that bound."""
    bounds = sorted((float(le), count) for le, count in buckets.items())
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def stats(interval: RouterCounters) -> RequestStats:
    def ms(q: float) -> float | None:
        value = quantile(q, interval.buckets)
        return round(value * 1000, 3) if value is not None else None

    return RequestStats(
        requests=round(sum(interval.codes.values())),
        classes={c: round(interval.codes.get(c, 0.0)) for c in CLASSES},
        p50_ms=ms(0.5),
        p95_ms=ms(0.95),
        p99_ms=ms(0.99),
    )


def _bound_key(le: str) -> str:
    """One spelling per bound ("0.1" and "0.10" are the same bucket)."""
    value = float(le)
    return "+Inf" if math.isinf(value) else repr(value)
