"""Backups of managed databases: one copy (an environment's database) to a file under
<data>/database-backups/<database id>/<copy id>/, on demand, before a restore, and on the
database's `backup_schedule`; restoring one; keeping the newest `backup_retention`.

A failed backup is a `failed` row with a one-line error, and never touches earlier backups.
Every monitor runs the schedule (`start`); of several, only the one whose Redis SET NX of the
slot wins takes a slot's backup."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.databases import dumps, service
from devpush.databases.models import DatabaseBackup, DatabaseCopy, ManagedDatabase
from devpush.db import new_id, session_scope, utcnow
from devpush.errors import Conflict, DevpushError, NotFound
from devpush.platform import Platform
from devpush.projects import cron as cron_rules
from devpush.projects.models import Environment, Project
from devpush.settings import Settings

log = logging.getLogger("devpush.databases")
TICK = 30.0  # seconds between looks at the schedules
CLAIM_TTL = 7 * 86_400  # a slot's claim outlives any plan made before its backup's row
_LOOPS: set[asyncio.Task[None]] = set()


async def _copy(
    session: AsyncSession, database: ManagedDatabase, environment_id: str
) -> DatabaseCopy:
    """The environment's copy; a SQLite database's is recorded at its first backup."""
    environment = await session.get(Environment, environment_id)
    if environment is None or environment.project_id != database.project_id:
        raise NotFound("no such environment in this database's project")
    copy = await session.scalar(
        select(DatabaseCopy).where(
            DatabaseCopy.database_id == database.id, DatabaseCopy.scope == environment_id
        )
    )
    if copy is not None:
        return copy
    if database.engine == "postgres":
        raise NotFound(
            f"{database.name} has no copy in {environment.name} yet: it is made at the "
            "environment's first deployment"
        )
    copy = DatabaseCopy(
        database_id=database.id,
        project_id=database.project_id,
        environment_id=environment_id,
        scope=environment_id,
    )
    session.add(copy)
    await session.flush()
    return copy


async def _sqlite_file(
    session: AsyncSession, p: Platform, database: ManagedDatabase, environment_id: str
) -> Path:
    project = await session.get(Project, database.project_id)
    path = await service.sqlite_file(p, project, database, environment_id) if project else None
    if path is None:
        raise dumps.DumpFailed(
            f"the volume {database.volume!r} of this environment holds no data yet (the file "
            "appears once a deployment has written it)"
        )
    return path


def _directory(settings: Settings, database_id: str, copy_id: str) -> Path:
    top = service.backups_dir(settings, database_id)
    top.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in (top, top / copy_id):
        directory.mkdir(mode=0o700, exist_ok=True)
    return top / copy_id


async def _dump(
    session: AsyncSession,
    p: Platform,
    database: ManagedDatabase,
    copy: DatabaseCopy,
    environment_id: str,
    partial: Path,
) -> None:
    timeout = p.settings.database_backup_timeout
    if database.engine == "postgres":
        await dumps.pg_dump(
            service.admin_url(p.settings),
            copy.db_name or "",
            partial,
            timeout=timeout,
            path_first=bool(p.settings.databases_admin_url),
        )
    else:
        live = await _sqlite_file(session, p, database, environment_id)
        await asyncio.to_thread(dumps.sqlite_dump, live, partial, timeout=timeout)


async def _take(
    session: AsyncSession,
    p: Platform,
    database: ManagedDatabase,
    environment_id: str,
    trigger: str,
    protect: str | None = None,
) -> DatabaseBackup:
    copy = await _copy(session, database, environment_id)
    row = DatabaseBackup(
        id=new_id(),
        database_id=database.id,
        copy_id=copy.id,
        status="running",
        trigger=trigger,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    directory = service.backups_dir(p.settings, database.id) / copy.id
    suffix = ".dump" if database.engine == "postgres" else service.SQLITE_SUFFIX
    dest = directory / f"{row.created_at:%Y%m%dT%H%M%SZ}-{row.id}{suffix}"
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        await asyncio.to_thread(_directory, p.settings, database.id, copy.id)
        await _dump(session, p, database, copy, environment_id, partial)
        await asyncio.to_thread(os.replace, partial, dest)
        size = (await asyncio.to_thread(dest.stat)).st_size
    except (dumps.DumpFailed, DevpushError, OSError) as exc:
        partial.unlink(missing_ok=True)
        message = exc.message if isinstance(exc, DevpushError) else str(exc)
        row.status, row.error = "failed", dumps.one_line(message)
        row.finished_at = utcnow()
        await session.flush()
        log.warning(
            "database backup failed",
            extra={"database_id": database.id, "backup_id": row.id, "error": row.error},
        )
        return row
    except BaseException:  # cancelled: no partial file stays behind
        partial.unlink(missing_ok=True)
        raise
    row.status, row.path, row.size_bytes = "succeeded", str(dest), size
    row.finished_at = utcnow()
    await session.flush()
    await _retain(session, database, copy.id, protect)
    return row


async def backup(
    *,
    session: AsyncSession,
    p: Platform,
    database: ManagedDatabase,
    environment_id: str,
    trigger: str = "manual",
) -> DatabaseBackup:
    """Back up the environment's copy. The row says how it went: `failed` with an error
    (the partial file deleted, earlier backups kept) or `succeeded`, after which backups
    beyond the newest `backup_retention` of that copy are deleted."""
    return await _take(session, p, database, environment_id, trigger)


async def _retain(
    session: AsyncSession, database: ManagedDatabase, copy_id: str, protect: str | None
) -> None:
    """Keep the newest `backup_retention` succeeded backups of the copy (and `protect`, the
    one a restore is about to read); failed rows older than the oldest kept go too."""
    rows = list(
        await session.scalars(
            select(DatabaseBackup)
            .where(DatabaseBackup.copy_id == copy_id, DatabaseBackup.status == "succeeded")
            .order_by(DatabaseBackup.created_at.desc(), DatabaseBackup.id.desc())
        )
    )
    kept = rows[: database.backup_retention]
    for row in rows[database.backup_retention :]:
        if row.id == protect:
            continue
        if row.path:
            await asyncio.to_thread(Path(row.path).unlink, missing_ok=True)
        await session.delete(row)
    if kept:
        oldest = min(r.created_at for r in kept)
        for row in await session.scalars(
            select(DatabaseBackup).where(
                DatabaseBackup.copy_id == copy_id,
                DatabaseBackup.status == "failed",
                DatabaseBackup.created_at < oldest,
            )
        ):
            await session.delete(row)
    await session.flush()


async def restore(
    *, session: AsyncSession, p: Platform, database: ManagedDatabase, backup_id: str
) -> DatabaseBackup:
    """Put a backup back into its environment's copy, after a `restore-point` backup of the
    copy as it is (so the restore can be undone); that backup is returned. The caller
    commits even when this raises: the restore point is a fact either way."""
    row = await session.get(DatabaseBackup, backup_id) if len(backup_id) <= 32 else None
    if row is None or row.database_id != database.id:
        raise NotFound("no such backup of this database")
    if row.status != "succeeded" or not row.path:
        raise Conflict(f"backup {row.id} did not succeed, so there is nothing to restore")
    if not await asyncio.to_thread(Path(row.path).is_file):
        raise Conflict(f"backup {row.id}'s file is gone from {row.path}")
    copy = await session.get(DatabaseCopy, row.copy_id)
    if copy is None or copy.environment_id is None:
        raise Conflict("this backup's copy no longer exists")
    point = await _take(session, p, database, copy.environment_id, "restore-point", row.id)
    if point.status != "succeeded":
        raise Conflict(f"no restore point could be taken, so nothing was restored: {point.error}")
    timeout = p.settings.database_backup_timeout
    try:
        if database.engine == "postgres":
            await dumps.pg_restore(
                service.admin_url(p.settings),
                copy.db_name or "",
                Path(row.path),
                timeout=timeout,
                path_first=bool(p.settings.databases_admin_url),
            )
        else:
            live = await _sqlite_file(session, p, database, copy.environment_id)
            await asyncio.to_thread(dumps.sqlite_restore, Path(row.path), live, timeout=timeout)
    except dumps.DumpFailed as exc:
        raise Conflict(
            f"{exc}; the restore point {point.id} holds the database as it was"
        ) from None
    log.info(
        "database restored",
        extra={"database_id": database.id, "backup_id": row.id, "restore_point": point.id},
    )
    return point


async def list_backups(
    *, session: AsyncSession, database_id: str, environment_id: str | None = None
) -> list[tuple[DatabaseBackup, DatabaseCopy]]:
    """The database's backups, newest first, each with its copy."""
    query = (
        select(DatabaseBackup, DatabaseCopy)
        .join(DatabaseCopy, DatabaseCopy.id == DatabaseBackup.copy_id)
        .where(DatabaseBackup.database_id == database_id)
        .order_by(DatabaseBackup.created_at.desc(), DatabaseBackup.id.desc())
    )
    if environment_id is not None:
        query = query.where(DatabaseCopy.environment_id == environment_id)
    return [(b, c) for b, c in (await session.execute(query)).all()]


# ---- the schedule ---------------------------------------------------------------------------
async def _due_now(session: AsyncSession, now: datetime) -> list[tuple[str, str, datetime]]:
    """(database id, environment id, slot) of each environment whose latest slot came after
    its latest scheduled backup (and after the database was attached)."""
    rows = await session.execute(
        select(ManagedDatabase, Environment.id)
        .join(Environment, Environment.project_id == ManagedDatabase.project_id)
        .where(ManagedDatabase.backup_schedule.is_not(None))
    )
    due = []
    for database, environment_id in rows.all():
        try:
            slot = cron_rules.last_slot(cron_rules.check_schedule(database.backup_schedule), now)
        except ValueError:
            continue
        if slot < database.created_at:
            continue
        copies = select(DatabaseCopy.id).where(
            DatabaseCopy.database_id == database.id, DatabaseCopy.scope == environment_id
        )
        if database.engine == "postgres" and await session.scalar(copies) is None:
            continue  # made at the environment's first deployment
        last = await session.scalar(
            select(func.max(DatabaseBackup.created_at)).where(
                DatabaseBackup.copy_id.in_(copies), DatabaseBackup.trigger == "schedule"
            )
        )
        if last is None or last < slot:
            due.append((database.id, environment_id, slot))
    return due


async def due(p: Platform, now: datetime | None = None) -> list[str]:
    """One look at the schedules: takes the backups due whose slot this scheduler claims
    first; the ids of the backups taken here."""
    now = now or utcnow()
    async with session_scope(p.sessions) as session:
        plan = await _due_now(session, now)
    taken = []
    for database_id, environment_id, slot in plan:
        key = f"devpush:database-backup:{database_id}:{environment_id}:{slot:%Y%m%dT%H%M}"
        if not await p.redis.set(key, "1", nx=True, ex=CLAIM_TTL):
            continue  # another monitor holds the slot
        try:
            async with session_scope(p.sessions) as session:
                database = await session.get(ManagedDatabase, database_id)
                if database is None:
                    continue
                row = await backup(
                    session=session,
                    p=p,
                    database=database,
                    environment_id=environment_id,
                    trigger="schedule",
                )
                taken.append(row.id)
        except DevpushError as exc:  # the environment went away meanwhile: the next slot
            log.warning(
                "scheduled database backup not taken",
                extra={"database_id": database_id, "error": exc.message},
            )
    return taken


async def loop(p: Platform, stop: asyncio.Event, tick: float = TICK) -> None:
    while not stop.is_set():
        try:
            await due(p)
        except Exception:  # the database or Redis restarting: look again next tick
            log.exception("database backup tick failed; retrying")
        try:
            await asyncio.wait_for(stop.wait(), tick)
        except TimeoutError:
            pass


def start(p: Platform, stop: asyncio.Event) -> asyncio.Task[None]:
    """The schedule's loop as a task of the monitor, until `stop` is set (held here: the
    event loop keeps only a weak reference to it)."""
    task = asyncio.create_task(loop(p, stop), name="devpush-database-backups")
    _LOOPS.add(task)
    task.add_done_callback(_LOOPS.discard)
    return task
