"""Loading a managed database for a principal: through its project, so another team's
database answers 404 like its project."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal
from devpush.databases.models import ManagedDatabase
from devpush.errors import NotFound
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.teams.access import Action


async def load_database(
    *, session: AsyncSession, principal: Principal, database_id: str, action: Action
) -> tuple[ManagedDatabase, Project]:
    database = await session.get(ManagedDatabase, database_id) if len(database_id) <= 32 else None
    if database is None:
        raise NotFound("no such database")
    try:
        project = await load_project(
            session=session, principal=principal, project_id=database.project_id, action=action
        )
    except NotFound:
        raise NotFound("no such database") from None
    return database, project
