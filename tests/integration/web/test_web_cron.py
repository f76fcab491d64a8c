"""The project's Cron page: the declaration form (its errors shown, nothing saved), the jobs
of each environment's live deployment with their runs, running one now, and another team's
project answering 404."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from devpush.cron.models import CronRun
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.projects.service import list_environments
from tests.factories.auth import Account
from tests.integration.test_cron import NIGHTLY, go_live
from tests.integration.web.conftest import Browser
from tests.integration.web.test_web_smoke import make_project


@pytest.fixture
async def shop(platform: Platform, alice: Account) -> str:
    project_id, _ = await make_project(platform, alice.team_id)
    return project_id


async def config_of(platform: Platform, project_id: str) -> dict[str, object]:
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        return dict(project.config)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nightly | 61 * * * * | 60 | true", "not a cron expression"),
        ("nightly | 0 3 * * *", "write name | schedule | timeout"),
        ("a | * * * * * | 5 | true\na | * * * * * | 5 | false", "two cron jobs are named"),
        ("a | * * * * * | 0 | true", "timeout"),
    ],
)
async def test_bad_lines_are_shown_and_change_nothing(
    alice_web: Browser, shop: str, platform: Platform, text: str, words: str
) -> None:
    response = await alice_web.post(f"/projects/{shop}/cron", {"cron": text})
    assert response.status_code == 422, response.text[:500]
    assert 'data-error-for="cron"' in response.text and words in response.text
    assert "cron" not in await config_of(platform, shop)


async def test_jobs_are_saved_listed_and_run_now(
    alice_web: Browser, bob_web: Browser, shop: str, platform: Platform
) -> None:
    line = "nightly | 0 3 * * * | 600 | python manage.py clearsessions"
    saved = await alice_web.post(f"/projects/{shop}/cron", {"cron": line})
    assert saved.status_code == 303, saved.text[:500]
    assert (await config_of(platform, shop))["cron"] == [
        {"name": "nightly", "schedule": "0 3 * * *", "timeout": 600,
         "command": "python manage.py clearsessions"},
    ]  # fmt: skip
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, shop)
        assert project is not None
        listing = {
            "id": project.id,
            "slug": project.slug,
            "environments": [
                {"id": e.id, "name": e.name}
                for e in await list_environments(session=session, project_id=shop)
            ],
        }
    await go_live(platform, listing, [NIGHTLY])
    page = await alice_web.get(f"/projects/{shop}/cron")
    assert page.status_code == 200 and 'data-job="nightly"' in page.text
    assert "Run now" in page.text and line in page.text
    production = next(e for e in listing["environments"] if e["name"] == "production")
    queued = await alice_web.post(
        f"/projects/{shop}/cron/nightly/run", {"environment_id": production["id"]}
    )
    assert queued.status_code == 303
    async with session_scope(platform.sessions) as session:
        [run] = list(await session.scalars(select(CronRun)))
    assert run.status == "queued" and run.job == "nightly"
    shown = await alice_web.get(f"/projects/{shop}/cron")
    assert f"#{run.id[:8]}" in shown.text
    assert (await bob_web.get(f"/projects/{shop}/cron")).status_code == 404
    refused = await bob_web.post(f"/projects/{shop}/cron", {"cron": line})
    assert refused.status_code == 404
