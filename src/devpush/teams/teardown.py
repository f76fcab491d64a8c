"""Team teardown for the delete job: its projects, then the team. The projects' own teardown
(instances, routes, mirrors, logs) belongs to the layers above teams; the job hands it in
(deployments/teardown.py `delete_team_projects`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import delete

from devpush.db import session_scope
from devpush.platform import Platform
from devpush.teams.models import Team

DeleteProjects = Callable[[Platform, str], Awaitable[None]]


async def delete_team(p: Platform, team_id: str, *, delete_projects: DeleteProjects) -> bool:
    async with session_scope(p.sessions) as session:
        team = await session.get(Team, team_id)
        if team is None:
            return False
        team.status = "deleting"
    await delete_projects(p, team_id)
    async with session_scope(p.sessions) as session:
        await session.execute(delete(Team).where(Team.id == team_id))
    return True
