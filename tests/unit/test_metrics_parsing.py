"""Traefik's exposition text into per-router deltas and percentiles, and the metrics API's
`since`/`step` validation (metrics/requests.py, metrics/schemas.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devpush.errors import Invalid
from devpush.metrics import requests
from devpush.metrics.sampler import cpu_percent
from devpush.metrics.schemas import duration, parse_since, parse_step
from devpush.metrics.service import Previous
from devpush.runtime.docker_stats import parse_stats


def exposition(ok: int, missing: int, errors: int, fast: int, slow: int) -> str:
    """As Traefik v3 writes it: `ok` 200s and `missing` 404s on GET, `errors` 502s on POST;
    `fast` of them took under 10 ms, `slow` between 100 and 250 ms."""
    total = ok + missing + errors
    bounds = [("0.005", 0), ("0.01", fast), ("0.1", fast), ("0.25", fast + slow), ("+Inf", total)]
    lines = [
        "# HELP traefik_router_requests_total How many HTTP requests are processed on a router.",
        "# TYPE traefik_router_requests_total counter",
        f'traefik_router_requests_total{{code="200",method="GET",protocol="http",'
        f'router="shop-dep1@file",service="shop-dep1@file"}} {ok}',
        f'traefik_router_requests_total{{code="404",method="GET",protocol="http",'
        f'router="shop-dep1@file",service="shop-dep1@file"}} {missing}',
        f'traefik_router_requests_total{{code="502",method="POST",protocol="http",'
        f'router="shop-dep1@file",service="shop-dep1@file"}} {errors}',
        'traefik_router_requests_total{code="200",method="GET",protocol="http",'
        'router="devpush-app@file",service="devpush-app@file"} 7',
        "# HELP traefik_router_request_duration_seconds How long it took to process the request.",
        "# TYPE traefik_router_request_duration_seconds histogram",
    ]
    for le, count in bounds:  # all under one label set, as if every request were a GET 200
        lines.append(
            f'traefik_router_request_duration_seconds_bucket{{code="200",method="GET",'
            f'protocol="http",router="shop-dep1@file",service="shop-dep1@file",le="{le}"}} {count}'
        )
    lines += [
        'traefik_router_request_duration_seconds_sum{code="200",method="GET",protocol="http",'
        'router="shop-dep1@file",service="shop-dep1@file"} 1.5',
        f'traefik_router_request_duration_seconds_count{{code="200",method="GET",'
        f'protocol="http",router="shop-dep1@file",service="shop-dep1@file"}} {total}',
        "# HELP traefik_entrypoint_requests_total How many HTTP requests on an entrypoint.",
        "# TYPE traefik_entrypoint_requests_total counter",
        'traefik_entrypoint_requests_total{code="200",entrypoint="web",method="GET",'
        'protocol="http"} 1000',
    ]
    return "\n".join(lines) + "\n"


def test_parse_sums_a_router_over_codes_and_drops_the_provider() -> None:
    routers = requests.parse(exposition(ok=8, missing=1, errors=1, fast=6, slow=4))
    assert set(routers) == {"shop-dep1", "devpush-app"}
    shop = routers["shop-dep1"]
    assert shop.codes == {"2xx": 8, "4xx": 1, "5xx": 1}
    assert shop.buckets["+Inf"] == 10 and shop.buckets["0.25"] == 10 and shop.buckets["0.01"] == 6


def test_deltas_and_percentiles_over_one_interval() -> None:
    before = requests.parse(exposition(ok=8, missing=1, errors=1, fast=6, slow=4))
    after = requests.parse(exposition(ok=98, missing=1, errors=1, fast=96, slow=4))
    interval = requests.delta(before["shop-dep1"], after["shop-dep1"])
    stats = requests.stats(interval)
    assert stats.requests == 90
    assert stats.classes == {"2xx": 90, "3xx": 0, "4xx": 0, "5xx": 0}
    # 90 new requests, all under 10 ms: the median sits in the (5 ms, 10 ms] bucket.
    assert stats.p50_ms is not None and 5 < stats.p50_ms <= 10
    assert stats.p99_ms is not None and stats.p99_ms <= 10


def test_slow_requests_raise_the_high_percentiles() -> None:
    before = requests.parse(exposition(ok=0, missing=0, errors=0, fast=0, slow=0))
    after = requests.parse(exposition(ok=100, missing=0, errors=0, fast=90, slow=10))
    stats = requests.stats(requests.delta(before["shop-dep1"], after["shop-dep1"]))
    assert stats.p50_ms is not None and stats.p50_ms <= 10
    assert stats.p95_ms is not None and 100 < stats.p95_ms <= 250
    assert stats.p99_ms is not None and stats.p95_ms < stats.p99_ms <= 250


def test_a_counter_that_went_back_counts_from_zero() -> None:
    before = requests.parse(exposition(ok=500, missing=0, errors=0, fast=500, slow=0))
    after = requests.parse(exposition(ok=3, missing=0, errors=2, fast=5, slow=0))  # restarted
    stats = requests.stats(requests.delta(before["shop-dep1"], after["shop-dep1"]))
    assert stats.requests == 5 and stats.classes["5xx"] == 2


def test_no_requests_no_percentiles() -> None:
    same = requests.parse(exposition(ok=5, missing=0, errors=0, fast=5, slow=0))["shop-dep1"]
    stats = requests.stats(requests.delta(same, same))
    assert stats.requests == 0 and stats.p50_ms is None and stats.p99_ms is None
    assert requests.quantile(0.5, {}) is None


def test_quantile_past_the_last_finite_bound_is_that_bound() -> None:
    assert requests.quantile(0.99, {"0.1": 0, "1.0": 0, "+Inf": 10}) == 1.0
    assert requests.quantile(0.5, {"0.1": 10, "+Inf": 10}) == pytest.approx(0.05)


NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def test_since_takes_durations_and_iso_times() -> None:
    assert parse_since(None, NOW) == NOW - timedelta(hours=1)
    assert parse_since("15m", NOW) == NOW - timedelta(minutes=15)
    assert parse_since("2026-12-07T05:00:00", NOW) == NOW - timedelta(hours=1)
    assert parse_since("2026-12-07T05:00:00+01:00", NOW) == NOW - timedelta(hours=2)
    assert duration("7d") == 7 * 86400 and duration("1 h") is None


@pytest.mark.parametrize(
    ("since", "says"),
    [
        ("yesterday", "neither an ISO 8601 time"),
        ("-1h", "neither an ISO 8601 time"),
        ("2027-01-01T00:00:00Z", "not in the past"),
        ("0s", "not in the past"),
        ("365d", "too far back"),
    ],
)
def test_bad_since_is_refused_with_the_reason(since: str, says: str) -> None:
    with pytest.raises(Invalid, match=says):
        parse_since(since, NOW)


def test_step_defaults_to_a_readable_number_of_points() -> None:
    hour, week = NOW - timedelta(hours=1), NOW - timedelta(days=7)
    assert parse_step(None, since=hour, now=NOW, interval=10) == 10
    assert parse_step(None, since=week, now=NOW, interval=10) == 3600
    assert parse_step("5m", since=hour, now=NOW, interval=10) == 300
    assert parse_step("1m", since=hour, now=NOW, interval=10) == 60


@pytest.mark.parametrize(
    ("step", "since", "says"),
    [
        ("fast", timedelta(hours=1), "not a duration"),
        ("5s", timedelta(hours=1), "shorter than the sampling interval"),
        ("2d", timedelta(days=7), "longer than a day"),
        ("10s", timedelta(days=7), "more than 2000 points"),
    ],
)
def test_bad_step_is_refused_with_the_reason(step: str, since: timedelta, says: str) -> None:
    with pytest.raises(Invalid, match=says):
        parse_step(step, since=NOW - since, now=NOW, interval=10)


def test_cpu_percent_from_two_samples() -> None:
    before = Previous(NOW - timedelta(seconds=10), 3.0)
    assert cpu_percent(5.0, NOW, before, 10) == 20.0
    assert cpu_percent(1.0, NOW, before, 10) is None  # restarted: the counter went back
    assert cpu_percent(5.0, NOW, Previous(NOW - timedelta(minutes=5), 3.0), 10) is None
    assert cpu_percent(5.0, NOW, None, 10) is None


def test_engine_stats_less_the_page_cache() -> None:
    v2 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
        "memory_stats": {"usage": 50_000_000, "stats": {"inactive_file": 10_000_000}},
    }
    stats = parse_stats(v2)
    assert stats is not None and stats.cpu_seconds == 2.5 and stats.memory_bytes == 40_000_000
    v1 = {"cpu_stats": {"cpu_usage": {"total_usage": 1}}, "memory_stats": {"usage": 9}}
    assert parse_stats(v1) == parse_stats(v1 | {"memory_stats": {"usage": 9, "stats": {}}})
    assert parse_stats({"cpu_stats": {}, "memory_stats": {}}) is None


def test_traefik_exposes_router_metrics_on_its_own_entrypoint() -> None:
    from devpush.proxy.traefik import LATENCY_BUCKETS, render_static
    from devpush.settings import Settings

    static = render_static(Settings(_env_file=None))  # type: ignore[call-arg]
    prometheus = static["metrics"]["prometheus"]
    assert prometheus["entryPoint"] == "traefik" and prometheus["addRoutersLabels"] is True
    assert prometheus["buckets"] == list(LATENCY_BUCKETS)
    compose = (Path(__file__).resolve().parents[2] / "compose" / "base.yml").read_text()
    assert 'TRAEFIK_METRICS_PROMETHEUS_ADDROUTERSLABELS: "true"' in compose
    line = next(x for x in compose.splitlines() if "TRAEFIK_METRICS_PROMETHEUS_BUCKETS" in x)
    assert [float(b) for b in line.split('"')[1].split(",")] == list(LATENCY_BUCKETS)


def test_cgroup_stats_read_v1_and_v2_files(tmp_path: Path) -> None:
    from devpush.runtime.process_stats import cgroup_stats

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    (v2 / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (v2 / "memory.current").write_text("50000000\n")
    (v2 / "memory.stat").write_text("anon 30000000\nfile 20000000\ninactive_file 15000000\n")
    assert cgroup_stats({c: str(v2) for c in ("cpu", "memory", "pids")}) == (2.5, 35_000_000)
    memory, cpuacct, build = (tmp_path / n for n in ("memory", "cpuacct", "build"))
    for d in (memory, cpuacct, build):
        d.mkdir()
    (memory / "memory.usage_in_bytes").write_text("9000000\n")
    (memory / "memory.stat").write_text("cache 2000000\ntotal_inactive_file 1000000\n")
    (cpuacct / "cpuacct.usage").write_text("1500000000\n")
    (build / "cpuacct.usage").write_text("999000000000\n")
    dirs = {"memory": str(memory), "cpuacct": str(cpuacct), "build:cpuacct": str(build)}
    assert cgroup_stats(dirs) == (1.5, 8_000_000)  # the build stage's own group is not the app
    assert cgroup_stats({"memory": str(memory)}) == (None, 8_000_000)  # CPU: the process tree's
