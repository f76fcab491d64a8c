"""Fixtures for the log tests: alice's project and deployments made through the real services,
and the app served by a real uvicorn on loopback (SSE needs a server that streams)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvicorn

from devpush.app import create_app
from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.platform import Platform
from devpush.projects import env
from devpush.projects import service as projects
from devpush.projects.models import Project
from devpush.projects.schemas import EnvironmentIn, ProjectCreate
from tests.conftest import free_port
from tests.factories.auth import Account
from tests.integration.logs.helpers import SECRET, MakeDeployment, ProjectRefs


@pytest.fixture
async def project(platform: Platform, alice: Account) -> ProjectRefs:
    async with session_scope(platform.sessions) as session:
        row = await projects.create_project(
            session=session,
            team_id=alice.team_id,
            body=ProjectCreate(
                name="shop",
                start_command="python3 app.py",
                environments=[EnvironmentIn(name="staging", branch_pattern="release/*")],
            ),
        )
        await env.set_env_vars(
            session=session,
            project_id=row.id,
            values={"API_KEY": SECRET},
            secret=True,
            replace=False,
        )
        envs = await projects.list_environments(session=session, project_id=row.id)
        return ProjectRefs(row.id, alice.team_id, {e.slug: e.id for e in envs})


@pytest.fixture
def make_deployment(platform: Platform, project: ProjectRefs) -> MakeDeployment:
    async def make(branch: str = "main", project_id: str | None = None) -> str:
        async with session_scope(platform.sessions) as session:
            row = await session.get(Project, project_id or project.id)
            assert row is not None
            deployment, _ = await deployments.create(
                session=session,
                settings=platform.settings,
                project=row,
                branch=branch,
                trigger="api",
            )
            return deployment.id

    return make


@pytest.fixture
async def server(platform: Platform) -> AsyncIterator[str]:
    """The app on a real HTTP server in this event loop (ASGITransport buffers whole bodies)."""
    app = create_app(platform.settings)
    app.state.platform = platform
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    config.timeout_graceful_shutdown = 2
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 15)
