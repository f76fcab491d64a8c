"""Managed PostgreSQL end to end, on both runtimes (issue #20): a Flask app with psycopg reads
and writes the database the platform attached to its project through DATABASE_URL, from its
sandbox or container, at the runtime's address of this machine; what it wrote is there after a
redeploy; another project's app, with its own database, can't open the first one's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.corpus import APPS_DIR
from tests.e2e.apps import Api, push_app
from tests.e2e.test_volumes import Platform, deploy, new_project, running_on

pytestmark = pytest.mark.corpus

APP = APPS_DIR / "flask-orders"


@pytest.fixture(scope="module", params=["process", "docker"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    yield from running_on(request.param, tmp_path_factory.mktemp(f"databases-{request.param}"))


def orders(api: Api, url: str) -> list[str]:
    response = api.serve(url.rstrip("/") + "/orders")
    assert response.status_code == 200, (url, response.status_code, response.text[:500])
    return list(response.json()["orders"])


def add_order(api: Api, url: str, item: str) -> None:
    response = httpx.post(
        f"{api.proxy_url}/orders",
        headers={"Host": httpx.URL(url).host},
        json={"item": item},
        timeout=10,
    )
    assert response.status_code == 201, response.text[:500]


def with_database(api: Api, repo: Path, name: str) -> dict[str, Any]:
    project = new_project(api, repo, name)
    database = api.post(
        f"/api/v1/projects/{project['id']}/databases",
        {"engine": "postgres", "name": "main"},
        expect=201,
    )
    return {**project, "database": database}


def test_an_app_uses_its_database_and_no_other(platform: Platform, tmp_path: Path) -> None:
    api = platform.api
    shop = with_database(api, push_app(APP, tmp_path / "shop"), f"shop-{platform.runtime}")
    url = deploy(api, shop["id"])["urls"]["environment"]
    assert orders(api, url) == []
    add_order(api, url, "tea")
    add_order(api, url, "scones")
    assert orders(api, url) == ["tea", "scones"]
    deploy(api, shop["id"])  # a redeploy finds the data
    assert orders(api, url) == ["tea", "scones"]

    rival = with_database(api, push_app(APP, tmp_path / "rival"), f"rival-{platform.runtime}")
    rival_url = deploy(api, rival["id"])["urls"]["environment"]
    assert orders(api, rival_url) == []  # its own database
    [shop_copy] = shop["database"]["copies"]
    reached = api.serve(rival_url.rstrip("/") + f"/reach/{shop_copy['db_name']}")
    assert reached.status_code == 200, reached.text[:500]
    assert reached.json()["connected"] is False, reached.json()
    assert "pg_hba" in reached.json()["error"] or "permission" in reached.json()["error"]
    [rival_copy] = rival["database"]["copies"]
    own = api.serve(rival_url.rstrip("/") + f"/reach/{rival_copy['db_name']}")
    assert own.json() == {"connected": True}  # the probe itself works
    assert orders(api, url) == ["tea", "scones"]
