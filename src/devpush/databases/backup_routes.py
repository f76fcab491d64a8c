"""A managed database's backups: take one (deploy rights), list them, restore one (admin
rights: it replaces the environment's data, after a restore point)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import PlatformDep, SessionDep
from devpush.auth.deps import PrincipalDep
from devpush.databases import backups
from devpush.databases.access import load_database
from devpush.databases.backup_schemas import BackupIn, BackupRead, RestoreIn
from devpush.databases.models import DatabaseBackup, DatabaseCopy
from devpush.errors import NotFound
from devpush.projects.models import Environment
from devpush.teams.access import Action

router = APIRouter(tags=["databases"])


async def _environment_names(session: AsyncSession, project_id: str) -> dict[str, str]:
    rows = await session.execute(
        select(Environment.id, Environment.name).where(Environment.project_id == project_id)
    )
    return {environment_id: name for environment_id, name in rows.all()}


def _environment_id(names: dict[str, str], name: str) -> str:
    for environment_id, environment in names.items():
        if environment == name:
            return environment_id
    raise NotFound(f"this project has no environment named {name!r}")


def _read(row: DatabaseBackup, copy: DatabaseCopy, names: dict[str, str]) -> BackupRead:
    return BackupRead(
        id=row.id,
        database_id=row.database_id,
        environment_id=copy.environment_id,
        environment=names.get(copy.environment_id or ""),
        status=row.status,
        trigger=row.trigger,
        size_bytes=row.size_bytes,
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


@router.post("/databases/{database_id}/backups", response_model=BackupRead, status_code=201)
async def create_backup(
    database_id: str,
    body: BackupIn,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> BackupRead:
    """Back up one environment's copy now. A failed backup is answered too (status `failed`
    and its error); earlier backups are kept."""
    database, project = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.deploy
    )
    names = await _environment_names(session, project.id)
    row = await backups.backup(
        session=session,
        p=platform,
        database=database,
        environment_id=_environment_id(names, body.environment),
    )
    copy = await session.get(DatabaseCopy, row.copy_id)
    assert copy is not None
    await session.commit()
    return _read(row, copy, names)


@router.get("/databases/{database_id}/backups", response_model=list[BackupRead])
async def list_backups(
    database_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    environment: str | None = None,
) -> list[BackupRead]:
    """Newest first; `environment` (a name) keeps one environment's."""
    database, project = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.read
    )
    names = await _environment_names(session, project.id)
    rows = await backups.list_backups(
        session=session,
        database_id=database.id,
        environment_id=_environment_id(names, environment) if environment else None,
    )
    return [_read(row, copy, names) for row, copy in rows]


@router.post("/databases/{database_id}/restore", response_model=BackupRead)
async def restore_backup(
    database_id: str,
    body: RestoreIn,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> BackupRead:
    """Put a backup back into its environment. The answer is the restore point taken just
    before: restoring it undoes this."""
    database, project = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.manage
    )
    try:
        point = await backups.restore(
            session=session, p=platform, database=database, backup_id=body.backup_id
        )
    finally:
        await session.commit()  # the restore point (or its failure) is kept either way
    copy = await session.get(DatabaseCopy, point.copy_id)
    assert copy is not None
    return _read(point, copy, await _environment_names(session, project.id))
