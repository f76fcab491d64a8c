"""A build that fills the disk is stopped, with one line that says so, before the database
and the other apps on that disk run out of space; the previous deployment keeps serving and
the space comes back."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps.corpus import get, marker
from tests.e2e.apps import Api, create_bare_project, deploy_and_wait, git, push_app
from tests.e2e.conftest import _running
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.corpus
MiB = 1024 * 1024
MARGIN_MB = 400  # the build may use this much of today's free space, not more
FILL = '[build]\ncommand = "for i in $(seq 40); do head -c 50M /dev/zero > fill-$i.bin; done"\n'


@pytest.fixture(scope="module", params=["process", "docker"])
def tight(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningPlatform, int]]:
    data = tmp_path_factory.mktemp(f"disk-{request.param}")
    threshold = shutil.disk_usage(data).free // MiB - MARGIN_MB
    yield from (
        (running, threshold)
        for running in _running(
            request.param,
            data,
            DEVPUSH_BUILD_MIN_FREE_MB=str(threshold),
            DEVPUSH_DEPLOY_TIMEOUT="60",
        )
    )


def test_a_build_that_fills_the_disk_is_stopped(
    tight: tuple[RunningPlatform, int], tmp_path: Path
) -> None:
    running, threshold = tight
    api = Api(running.app_url, running.token(), running.proxy_url)
    repo = push_app(get("flask-gunicorn"), tmp_path / "app")
    project = create_bare_project(api, repo, "disk-filler")
    first = deploy_and_wait(api, project)
    assert first["conclusion"] == "succeeded", first["error"]
    (repo / "devpush.toml").write_text(FILL)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "write 2 GB during the build")
    done = deploy_and_wait(api, project)
    assert done["conclusion"] == "failed"
    assert "DEVPUSH_BUILD_MIN_FREE_MB" in done["error"] and "\n" not in done["error"]
    assert marker("flask-gunicorn") in api.body(first["urls"]["environment"])
    assert shutil.disk_usage(running.data_dir).free // MiB > threshold  # the space is back
