"""Teardown flows for the delete jobs: a project's instances, routes, mirrors and rows; a
team's projects; a user's sole-member teams and memberships. Each is idempotent."""

from __future__ import annotations

import asyncio
import shutil

from sqlalchemy import delete, func, select

from devpush.db import session_scope
from devpush.deployments.flows import mirror_path, remove_instance
from devpush.deployments.models import Deployment
from devpush.logs.models import LogLine
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.teams.models import Team, TeamMember


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
    mirror = mirror_path(p, project_id)
    for path in (mirror, p.settings.data_path / "repos" / f"{project_id}.git"):
        await asyncio.to_thread(shutil.rmtree, path, True)
    mirror.with_name(f"{mirror.name}.lock").unlink(missing_ok=True)
    async with session_scope(p.sessions) as session:
        await session.execute(delete(LogLine).where(LogLine.project_id == project_id))
        await session.execute(delete(Project).where(Project.id == project_id))
    return True


async def delete_team(p: Platform, team_id: str) -> bool:
    async with session_scope(p.sessions) as session:
        team = await session.get(Team, team_id)
        if team is None:
            return False
        team.status = "deleting"
        project_ids = list(
            await session.scalars(select(Project.id).where(Project.team_id == team_id))
        )
    for project_id in project_ids:
        await delete_project(p, project_id)
    async with session_scope(p.sessions) as session:
        await session.execute(delete(Team).where(Team.id == team_id))
    return True


async def delete_user(p: Platform, user_id: str) -> bool:
    """Delete the user's teams where they are the only member, then the user."""
    from devpush.auth.models import User

    async with session_scope(p.sessions) as session:
        user = await session.get(User, user_id)
        if user is None:
            return False
        user.status = "deleting"
        sizes = (
            select(TeamMember.team_id, func.count().label("n"))
            .group_by(TeamMember.team_id)
            .subquery()
        )
        solo = list(
            await session.scalars(
                select(TeamMember.team_id)
                .join(sizes, sizes.c.team_id == TeamMember.team_id)
                .where(TeamMember.user_id == user_id, sizes.c.n == 1)
            )
        )
    for team_id in solo:
        await delete_team(p, team_id)
    async with session_scope(p.sessions) as session:
        await session.execute(delete(User).where(User.id == user_id))
    return True
