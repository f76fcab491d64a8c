"""Loading a project for a principal: the project and the caller's role in one query, then
the team's decision (teams/access.py)."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal
from devpush.errors import NotFound
from devpush.projects.models import Project
from devpush.teams.access import Action, check
from devpush.teams.models import TeamMember

# Built once (every project-scoped request runs it): the project and the caller's role.
_PROJECT_WITH_ROLE = (
    select(Project, TeamMember.role)
    .outerjoin(
        TeamMember,
        (TeamMember.team_id == Project.team_id) & (TeamMember.user_id == bindparam("user_id")),
    )
    .where(Project.id == bindparam("project_id"))
)


async def load_project(
    *, session: AsyncSession, principal: Principal, project_id: str, action: Action
) -> Project:
    """The project with the caller's role in its team, read in one query (every
    project-scoped request goes through here)."""
    row = None
    if len(project_id) <= 32:
        params = {"project_id": project_id, "user_id": principal.user_id}
        row = (await session.execute(_PROJECT_WITH_ROLE, params)).one_or_none()
    if row is None or row[0].status == "deleting":
        raise NotFound("no such project")
    project, role = row
    check(principal, project.team_id, role, action)
    return project
