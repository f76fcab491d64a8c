"""Every page renders for a signed-in user, as HTML."""

from __future__ import annotations

from typing import Any

import pytest

from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects.schemas import EnvironmentIn, ProjectCreate


async def make_project(platform: Platform, team_id: str, name: str = "shop") -> tuple[str, str]:
    async with session_scope(platform.sessions) as session:
        project = await projects.create_project(
            session=session,
            team_id=team_id,
            body=ProjectCreate(
                name=name,
                repo_url="file:///tmp/nowhere",
                environments=[EnvironmentIn(name="staging", branch_pattern="release/*")],
                env_vars={"GREETING": "hello"},
            ),
        )
        deployment, _ = await deployments.create(
            session=session,
            settings=platform.settings,
            project=project,
            branch="main",
            trigger="api",
        )
        return project.id, deployment.id


@pytest.fixture
async def shop(platform: Platform, alice: Any) -> tuple[str, str]:
    return await make_project(platform, alice.team_id)


async def test_pages_render(alice_web: Any, alice: Any, shop: tuple[str, str]) -> None:
    project_id, deployment_id = shop
    for path in (
        f"/t/{alice.team_slug}",
        f"/t/{alice.team_slug}/settings",
        f"/t/{alice.team_slug}/new",
        "/teams/new",
        "/account",
        f"/projects/{project_id}",
        f"/projects/{project_id}/deployments",
        f"/projects/{project_id}/deployments?status=failed&branch=main&date=2030-01-01",
        f"/projects/{project_id}/deployments/table",
        f"/deployments/{deployment_id}",
        f"/deployments/{deployment_id}/summary",
        f"/projects/{project_id}/logs?q=hello&level=error",
        f"/projects/{project_id}/settings",
    ):
        response = await alice_web.get(path)
        assert response.status_code == 200, (path, response.text[:2000])
        assert response.headers["content-type"].startswith("text/html"), path
    home = await alice_web.get("/")
    assert home.status_code == 303 and home.headers["location"] == f"/t/{alice.team_slug}"
