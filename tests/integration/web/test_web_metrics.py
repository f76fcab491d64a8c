"""The deployment and project pages show the metrics charts (uPlot, fetched by
scripts/vendor.py), and say plainly when the chart library is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devpush.web import charts
from tests.integration.web.test_web_smoke import make_project


@pytest.fixture
async def shop(platform: Any, alice: Any) -> tuple[str, str]:
    return await make_project(platform, alice.team_id, name="metered-shop")


async def test_the_deployment_page_draws_charts_with_the_fetched_library(
    alice_web: Any, shop: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, deployment_id = shop
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / charts.LIBRARY).write_text("window.uPlot = function () {};")
    monkeypatch.setattr(charts, "VENDOR_DIR", vendor)
    page = await alice_web.get(f"/deployments/{deployment_id}")
    assert page.status_code == 200
    assert f'data-metrics="{deployment_id}"' in page.text
    assert '<script src="/static/vendor/uplot.min.js"' in page.text
    assert 'data-chart="latency"' in page.text and "charts-missing" not in page.text
    assert (await alice_web.get("/static/metrics.js")).status_code == 200


async def test_pages_say_when_the_chart_library_is_missing(
    alice_web: Any, shop: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id, deployment_id = shop
    monkeypatch.setattr(charts, "VENDOR_DIR", tmp_path / "nothing")
    for path in (f"/deployments/{deployment_id}", f"/projects/{project_id}"):
        page = await alice_web.get(path)
        assert page.status_code == 200, path
        assert 'data-testid="metrics"' in page.text, path
    deployment_page = await alice_web.get(f"/deployments/{deployment_id}")
    assert "uPlot, is missing" in deployment_page.text
    assert "python3 scripts/vendor.py" in deployment_page.text
    assert '/static/vendor/uplot.min.js"' not in deployment_page.text
