"""Project teardown for the delete job: its instances, routes, volumes, mirrors and rows.
Idempotent. A team's teardown (teams/teardown.py) runs it for each of the team's projects."""

from __future__ import annotations

import asyncio
import shutil

from sqlalchemy import delete, select

from devpush.databases import service as databases
from devpush.db import session_scope
from devpush.deployments.flows import mirror_path
from devpush.deployments.models import Deployment
from devpush.deployments.retire import remove_instance
from devpush.logs.models import LogLine
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik


async def delete_project(p: Platform, project_id: str) -> bool:
    async with session_scope(p.sessions) as session:
        project = await session.get(Project, project_id)
        if project is None:
            return False
        project.status = "deleting"
        slug = project.slug
        ids = list(
            await session.scalars(
                select(Deployment.id).where(
                    Deployment.project_id == project_id, Deployment.runtime_handle.is_not(None)
                )
            )
        )
    for deployment_id in ids:
        await remove_instance(p, deployment_id)
    traefik.remove_project(p.settings, slug)
    for runtime in p.runtimes.available():
        await p.runtimes.get(runtime).forget_project(project_id)
        await p.runtimes.get(runtime).delete_volumes(project_id)
    async with session_scope(p.sessions) as session:
        await databases.delete_project_databases(
            session=session, settings=p.settings, project_id=project_id
        )
    mirror = mirror_path(p, project_id)
    for path in (mirror, p.settings.data_path / "repos" / f"{project_id}.git"):
        await asyncio.to_thread(shutil.rmtree, path, True)
    mirror.with_name(f"{mirror.name}.lock").unlink(missing_ok=True)
    async with session_scope(p.sessions) as session:
        await session.execute(delete(LogLine).where(LogLine.project_id == project_id))
        await session.execute(delete(Project).where(Project.id == project_id))
    return True


async def delete_team_projects(p: Platform, team_id: str) -> None:
    async with session_scope(p.sessions) as session:
        ids = list(await session.scalars(select(Project.id).where(Project.team_id == team_id)))
    for project_id in ids:
        await delete_project(p, project_id)
