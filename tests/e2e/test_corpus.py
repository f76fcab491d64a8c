"""The apps people push, deployed with no devpush.toml and no commands, on both runtimes:
each goes live through Traefik and serves what the app really serves (Django's collected CSS,
the SPA's hashed assets, Express under NODE_ENV=production). On the process runtime each
project builds with its own package cache, as its own uid."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps.corpus import APPS, SampleApp, asset_paths
from tests.e2e.apps import Api, build_log, create_bare_project, deploy_and_wait, push_app

pytestmark = pytest.mark.corpus


LIVE = [app for app in APPS if app.expect_failure is None]


@pytest.mark.parametrize("app", LIVE, ids=[app.name for app in LIVE])
def test_app_goes_live_and_serves_what_it_serves(
    build_api: Api, tmp_path: Path, app: SampleApp
) -> None:
    repo = push_app(app, tmp_path / app.name)
    project = create_bare_project(build_api, repo, app.name)
    done = deploy_and_wait(build_api, project)
    log = build_log(build_api, project["id"], done["id"])
    assert done["conclusion"] == "succeeded", "\n".join([done["error"] or "", *log[-60:]])
    assert any(line.startswith("Plan: ") for line in log), log[:20]
    url = done["urls"]["deployment"]
    for check in app.checks:
        response = build_api.serve(url.rstrip("/") + check.path)
        assert response.status_code == check.status, (check, response.text[:300])
        if check.contains:
            assert check.contains in response.text, (check, response.text[:300])
        if check.header:
            name, value = check.header
            header = response.headers.get(name, "")
            assert value.lower() in header.lower(), (check, response.headers)
    if app.name == "vite-spa":
        assets = asset_paths(build_api.serve(url).text)
        assert any(path.endswith(".js") for path in assets), assets
        for path in assets:
            response = build_api.serve(url.rstrip("/") + path)
            assert response.status_code == 200, path
            assert "immutable" in response.headers["cache-control"], response.headers
            assert "<html" not in response.text[:200].lower(), path  # not the SPA fallback


def test_an_unavailable_python_fails_in_one_line_naming_it(build_api: Api, tmp_path: Path) -> None:
    app = next(app for app in APPS if app.expect_failure)
    repo = push_app(app, tmp_path / app.name)
    project = create_bare_project(build_api, repo, app.name)
    done = deploy_and_wait(build_api, project)
    assert done["conclusion"] == "failed"
    assert app.expect_failure and app.expect_failure in done["error"]
    assert ".python-version asks for 3.9" in done["error"] and "3.11" in done["error"]
    assert "\n" not in done["error"]
