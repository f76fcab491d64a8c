"""Managed databases of a project: attach, list, change, detach (admin rights to change)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import PlatformDep, SessionDep
from devpush.auth.deps import PrincipalDep
from devpush.databases import service
from devpush.databases.access import load_database
from devpush.databases.models import ManagedDatabase
from devpush.databases.schemas import DatabaseCopyRead, DatabaseIn, DatabaseRead, DatabaseUpdate
from devpush.errors import Invalid
from devpush.projects import cron as cron_rules
from devpush.projects.access import load_project
from devpush.projects.models import Environment, Project
from devpush.teams.access import Action

router = APIRouter(tags=["databases"])


async def database_read(
    session: AsyncSession, database: ManagedDatabase, project: Project
) -> DatabaseRead:
    names = dict(
        (
            await session.execute(
                select(Environment.id, Environment.name).where(Environment.project_id == project.id)
            )
        ).all()
    )
    path = None
    if database.engine == "sqlite":
        try:
            path = service.sqlite_path(project.config or {}, database)
        except Invalid:
            path = None
    copies = await service.copies(session=session, database_id=database.id)
    return DatabaseRead(
        id=database.id,
        project_id=database.project_id,
        name=database.name,
        engine=database.engine,
        env_var=database.env_var,
        previews=database.previews,
        volume=database.volume,
        path=path,
        backup_schedule=database.backup_schedule,
        backup_retention=database.backup_retention,
        created_at=database.created_at,
        copies=[
            DatabaseCopyRead(
                id=c.id,
                environment_id=c.environment_id,
                environment=names.get(c.environment_id or ""),
                scope=c.scope,
                db_name=c.db_name,
            )
            for c in copies
        ],
    )


@router.post("/projects/{project_id}/databases", response_model=DatabaseRead, status_code=201)
async def create_database(
    project_id: str,
    body: DatabaseIn,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DatabaseRead:
    """Attach a database. Its URL reaches every deployment from the next one on, under
    `env_var` (a secret)."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    database = await service.create(
        session=session, settings=platform.settings, project=project, **body.model_dump()
    )
    await session.commit()
    return await database_read(session, database, project)


@router.get("/projects/{project_id}/databases", response_model=list[DatabaseRead])
async def list_databases(
    project_id: str, session: SessionDep, principal: PrincipalDep
) -> list[DatabaseRead]:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    rows = await service.list_databases(session=session, project_id=project.id)
    return [await database_read(session, row, project) for row in rows]


@router.get("/databases/{database_id}", response_model=DatabaseRead)
async def get_database(
    database_id: str, session: SessionDep, principal: PrincipalDep
) -> DatabaseRead:
    database, project = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.read
    )
    return await database_read(session, database, project)


@router.patch("/databases/{database_id}", response_model=DatabaseRead)
async def update_database(
    database_id: str, body: DatabaseUpdate, session: SessionDep, principal: PrincipalDep
) -> DatabaseRead:
    database, project = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.manage
    )
    changes = body.model_dump(exclude_unset=True)
    if changes.get("backup_schedule") is not None:
        try:
            cron_rules.check_schedule(changes["backup_schedule"])
        except ValueError as exc:
            raise Invalid(f"backup_schedule: {exc}") from exc
    for key, value in changes.items():
        if value is not None or key == "backup_schedule":
            setattr(database, key, value)
    await session.commit()
    return await database_read(session, database, project)


@router.delete("/databases/{database_id}", status_code=204)
async def delete_database(
    database_id: str, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> None:
    """Detach a database: every environment's copy and every backup of it is deleted."""
    database, _ = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.manage
    )
    await service.delete(session=session, settings=platform.settings, database=database)
    await session.commit()
