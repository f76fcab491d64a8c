"""Metrics end to end through a real `devpush up` on both runtimes: an app is deployed, requests
reach it through Traefik, and the metrics API returns CPU and memory samples of its live
instance and the requests Traefik counted for it (scraped from Traefik's Prometheus metrics)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.apps import Api, make_repo
from tests.e2e.conftest import _running
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.e2e

INTERVAL = 2  # seconds between samples: short, so the test is


@pytest.fixture(scope="module", params=["process", "docker"])
def metrics_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp(f"platform-metrics-{request.param}")
    yield from _running(
        request.param,
        data,
        DEVPUSH_DEPLOY_TIMEOUT="20",
        DEVPUSH_METRICS_INTERVAL=str(INTERVAL),
        DEVPUSH_METRICS_TOKEN="e2e-metrics-token",
    )


@pytest.fixture(scope="module")
def api(metrics_platform: RunningPlatform) -> Api:
    return Api(metrics_platform.app_url, metrics_platform.token(), metrics_platform.proxy_url)


def totals(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests": sum(p["requests"] for p in points),
        "2xx": sum(p["status_2xx"] for p in points),
        "cpu": [p["cpu_percent"] for p in points if p["cpu_percent"] is not None],
        "memory": [p["memory_bytes"] for p in points if p["memory_bytes"]],
        "p50": [p["p50_ms"] for p in points if p["p50_ms"] is not None],
    }


def test_metrics_of_a_live_instance(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", body="measured")
    project = api.project(repo, "metered")
    deployment = api.wait(api.deploy(project["id"])["id"])
    assert deployment["conclusion"] == "succeeded", deployment
    url = deployment["urls"]["deployment"]
    sent = 0
    deadline = time.monotonic() + 60
    while True:
        for _ in range(10):
            assert api.body(url) == "measured"
        sent += 10
        time.sleep(INTERVAL)
        body = api.get(f"/api/v1/deployments/{deployment['id']}/metrics", since="10m", step="2s")
        seen = totals(body["points"])
        if (seen["requests"] >= 10 and seen["cpu"] and seen["memory"]) or (
            time.monotonic() > deadline
        ):
            break
    assert body["interval"] == INTERVAL and body["step"] == 2
    assert seen["memory"] and min(seen["memory"]) > 1_000_000, seen  # a Python process
    assert seen["cpu"] and all(c >= 0 for c in seen["cpu"]), seen
    # The first scrape only sets Traefik's baseline: what came after it is counted, never more.
    assert 10 <= seen["requests"] <= sent, (seen, sent)
    assert seen["2xx"] == seen["requests"] and seen["p50"], seen

    bad = api.http.get(f"/api/v1/deployments/{deployment['id']}/metrics", params={"step": "1s"})
    assert bad.status_code == 422 and "shorter than the sampling interval" in bad.text

    # The platform's own /metrics, for an operator's Prometheus.
    own = api.http.get("/metrics", headers={"Authorization": "Bearer e2e-metrics-token"})
    assert own.status_code == 200, own.text
    assert 'devpush_deployments{conclusion="succeeded",status="completed"} 1.0' in own.text
    assert api.http.get("/metrics").status_code == 401  # an API token is not this token
