"""Loading a project for a principal: the project and the caller's role in one query, then
the team's decision (teams/access.py)."""

from __future__ import annotations

from typing import NamedTuple, TypeVarTuple

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal
from devpush.errors import NotFound
from devpush.projects.models import Project
from devpush.teams.access import Action, check
from devpush.teams.models import TeamMember


class ProjectRef(NamedTuple):
    """What a read-only route needs of a project: who owns it and the slug its hostnames
    start with."""

    id: str
    team_id: str
    slug: str
    status: str


Cols = TypeVarTuple("Cols")


def _with_role(stmt: Select[*Cols]) -> Select[*Cols]:
    return stmt.outerjoin(
        TeamMember,
        (TeamMember.team_id == Project.team_id) & (TeamMember.user_id == bindparam("user_id")),
    ).where(Project.id == bindparam("project_id"))


# Built once (every project-scoped request runs one): the project and the caller's role.
_PROJECT_WITH_ROLE = _with_role(select(Project, TeamMember.role))
_REF_WITH_ROLE = _with_role(
    select(*(getattr(Project, f) for f in ProjectRef._fields), TeamMember.role)
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


async def project_ref(
    *, session: AsyncSession, principal: Principal, project_id: str, action: Action
) -> ProjectRef:
    """load_project for a route that only reads (the deployments list, the API's busiest
    read): the same query and decision, its columns read as a plain row on the session's
    connection, without an ORM object to build (half the query's client time)."""
    row = None
    if len(project_id) <= 32:
        params = {"project_id": project_id, "user_id": principal.user_id}
        connection = await session.connection()
        row = (await connection.execute(_REF_WITH_ROLE, params)).one_or_none()
    if row is None or row.status == "deleting":
        raise NotFound("no such project")
    project = ProjectRef(*row[:-1])
    check(principal, project.team_id, row[-1], action)
    return project
