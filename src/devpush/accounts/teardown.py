"""User teardown for the delete job: the teams where they are the only member, then the user."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from devpush.auth.models import User
from devpush.db import session_scope
from devpush.deployments.teardown import delete_team_projects
from devpush.platform import Platform
from devpush.teams.models import TeamMember
from devpush.teams.teardown import delete_team


async def delete_user(p: Platform, user_id: str) -> bool:
    """Delete the user's teams where they are the only member, then the user."""
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
        await delete_team(p, team_id, delete_projects=delete_team_projects)
    async with session_scope(p.sessions) as session:
        await session.execute(delete(User).where(User.id == user_id))
    return True
