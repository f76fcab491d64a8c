"""Managed databases of a project: attach (postgres: a database and role per environment on
the databases' server; sqlite: a file on one of the project's volumes), list, detach, and what
a deployment gets as env (DATABASE_URL, a secret)."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import crypto
from devpush.databases import server
from devpush.databases.models import ENGINES, PREVIEWS, DatabaseCopy, ManagedDatabase
from devpush.db import new_id
from devpush.errors import Conflict, Invalid, NotConfigured, NotFound
from devpush.platform import Platform
from devpush.projects import cron as cron_rules
from devpush.projects import volumes
from devpush.projects.models import Environment, Project
from devpush.runstate import databases_admin_url, databases_endpoint
from devpush.settings import Settings

NAME = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
ENV_VAR = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
SQLITE_SUFFIX = ".sqlite3"


@dataclass(frozen=True)
class Target:
    """Where a deployment runs, as databases see it."""

    project_id: str
    environment_id: str | None
    preview: bool
    branch: str
    pr_number: int | None

    @property
    def scope(self) -> str:
        if not self.preview and self.environment_id:
            return self.environment_id
        return f"preview:pr-{self.pr_number}" if self.pr_number else f"preview:{self.branch}"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise Invalid(
            "a database name is 1-30 lowercase letters, digits and underscores, starting "
            f"with a letter (got {name!r})"
        )
    return name


def sqlite_path(config: dict[str, Any], database: ManagedDatabase) -> str:
    """The file's path inside the instance: <the volume's mount path>/<name>.sqlite3."""
    for volume in volumes.declared(config):
        if volume["name"] == database.volume:
            return f"{volume['mount_path'].rstrip('/')}/{database.name}{SQLITE_SUFFIX}"
    raise Invalid(
        f"the SQLite database {database.name!r} lives on the volume {database.volume!r}, which "
        "this project no longer declares; declare it again, or detach the database"
    )


async def sqlite_file(
    p: Platform, project: Project, database: ManagedDatabase, environment_id: str
) -> Path | None:
    """The live file of an environment's copy of a SQLite database, on this machine (None: the
    volume holds no data yet). The project's runtime is asked first, then the others: volume
    data stays where it was made."""
    preferred = (project.config or {}).get("runtime") or p.settings.runtime
    for name in sorted(p.runtimes.available(), key=lambda n: n != preferred):
        directory = await p.runtimes.get(name).volume_dir(
            project.id, environment_id, database.volume or ""
        )
        if directory is not None:
            return directory / f"{database.name}{SQLITE_SUFFIX}"
    return None


def sqlite_link(path: Path) -> str | None:
    """The name of a symbolic link where the platform would open a SQLite file (the file, its
    directory, its journals), else None. The app owns its volume: a link it put there could
    point the platform's root at another project's file or a host file."""
    for candidate in (
        path.parent,
        path,
        *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm")),
    ):
        if candidate.is_symlink():
            return candidate.name
    return None


def backups_dir(settings: Settings, database_id: str) -> Path:
    """Where a database's backups are kept: <data>/database-backups/<database id>/<copy id>/."""
    return settings.data_path / "database-backups" / database_id


def admin_url(settings: Settings) -> str:
    url = databases_admin_url(settings)
    if url is None:
        raise NotConfigured(server.NOT_CONFIGURED)
    return url


async def list_databases(*, session: AsyncSession, project_id: str) -> list[ManagedDatabase]:
    rows = await session.scalars(
        select(ManagedDatabase)
        .where(ManagedDatabase.project_id == project_id)
        .order_by(ManagedDatabase.created_at, ManagedDatabase.name)
    )
    return list(rows)


async def get(*, session: AsyncSession, database_id: str) -> ManagedDatabase:
    row = await session.get(ManagedDatabase, database_id)
    if row is None:
        raise NotFound("database not found")
    return row


async def copies(*, session: AsyncSession, database_id: str) -> list[DatabaseCopy]:
    rows = await session.scalars(
        select(DatabaseCopy)
        .where(DatabaseCopy.database_id == database_id)
        .order_by(DatabaseCopy.created_at)
    )
    return list(rows)


async def _env_var(session: AsyncSession, project_id: str, name: str, wanted: str | None) -> str:
    taken = set(
        await session.scalars(
            select(ManagedDatabase.env_var).where(ManagedDatabase.project_id == project_id)
        )
    )
    if wanted is not None:
        if not ENV_VAR.match(wanted):
            raise Invalid(f"env_var must be an uppercase variable name (got {wanted!r})")
        if wanted in taken:
            raise Conflict(f"another database of this project is already given as {wanted}")
        return wanted
    default = "DATABASE_URL" if "DATABASE_URL" not in taken else f"{name.upper()}_DATABASE_URL"
    if default in taken:
        raise Conflict(f"another database of this project is already given as {default}")
    return default


def _check_options(
    project: Project,
    name: str,
    engine: str,
    previews: str,
    volume: str | None,
    backup_schedule: str | None,
    backup_retention: int,
) -> None:
    check_name(name)
    if engine not in ENGINES:
        raise Invalid(f"engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if previews not in PREVIEWS:
        raise Invalid(f"previews must be one of {', '.join(PREVIEWS)} (got {previews!r})")
    if backup_schedule is not None:
        try:
            cron_rules.check_schedule(backup_schedule)
        except ValueError as exc:
            raise Invalid(f"backup_schedule: {exc}") from exc
    if not 1 <= backup_retention <= 365:
        raise Invalid("backup_retention is a number of backups kept, from 1 to 365")
    if engine == "sqlite":
        declared = [v["name"] for v in volumes.declared(project.config or {})]
        if volume not in declared:
            raise Invalid(
                "a SQLite database lives on one of the project's volumes: pass `volume`, one "
                f"of {declared or 'none yet: declare a volume first'}"
            )
    elif volume is not None:
        raise Invalid("only a SQLite database takes a volume")


async def create(
    *,
    session: AsyncSession,
    settings: Settings,
    project: Project,
    engine: str,
    name: str,
    previews: str = "none",
    volume: str | None = None,
    env_var: str | None = None,
    backup_schedule: str | None = None,
    backup_retention: int = 7,
) -> ManagedDatabase:
    """Attach a database. Postgres copies for the project's environments are made now (the
    server's failure leaves nothing behind); later environments and previews get theirs at
    their first deployment."""
    _check_options(project, name, engine, previews, volume, backup_schedule, backup_retention)
    exists = await session.scalar(
        select(func.count())
        .select_from(ManagedDatabase)
        .where(ManagedDatabase.project_id == project.id, ManagedDatabase.name == name)
    )
    if exists:
        raise Conflict(f"this project already has a database named {name!r}")
    database = ManagedDatabase(
        project_id=project.id,
        name=name,
        engine=engine,
        env_var=await _env_var(session, project.id, name, env_var),
        previews=previews,
        volume=volume,
        backup_schedule=backup_schedule,
        backup_retention=backup_retention,
    )
    session.add(database)
    await session.flush()
    if engine == "postgres":
        url = admin_url(settings)
        environments = await session.scalars(
            select(Environment).where(Environment.project_id == project.id)
        )
        made: list[str] = []
        try:
            for environment in environments:
                copy = await _make_copy(session, url, database, environment.id, environment.id)
                made.append(copy.db_name or "")
        except Exception:
            for db_name in made:
                await server.drop(url, db_name)
            raise
    return database


async def _make_copy(
    session: AsyncSession,
    url: str,
    database: ManagedDatabase,
    scope: str,
    environment_id: str | None,
) -> DatabaseCopy:
    copy_id, password = new_id(), secrets.token_urlsafe(24)
    copy = DatabaseCopy(
        id=copy_id,
        database_id=database.id,
        project_id=database.project_id,
        environment_id=environment_id,
        scope=scope,
        db_name=f"dp_{copy_id}",
        password_enc=crypto.encrypt(password),
    )
    session.add(copy)
    await session.flush()
    await server.create(url, f"dp_{copy_id}", password)
    return copy


async def copy_for(
    *, session: AsyncSession, settings: Settings, database: ManagedDatabase, target: Target
) -> DatabaseCopy | None:
    """The target's copy, made when it has none yet (None: previews get none)."""
    if target.preview and database.previews == "none":
        return None
    found = await session.scalar(
        select(DatabaseCopy).where(
            DatabaseCopy.database_id == database.id, DatabaseCopy.scope == target.scope
        )
    )
    if found is not None or database.engine != "postgres":
        return found
    return await _make_copy(
        session,
        admin_url(settings),
        database,
        target.scope,
        None if target.preview else target.environment_id,
    )


async def env_for(
    *,
    session: AsyncSession,
    settings: Settings,
    target: Target,
    config: dict[str, Any],
    host_address: Callable[[], Awaitable[str]],
) -> dict[str, str]:
    """The deployment's database variables: each database's URL under its env var."""
    env: dict[str, str] = {}
    for database in await list_databases(session=session, project_id=target.project_id):
        if database.engine == "sqlite":
            if target.preview and database.previews == "none":
                continue
            env[database.env_var] = f"sqlite:///{sqlite_path(config, database)}"
            continue
        copy = await copy_for(session=session, settings=settings, database=database, target=target)
        if copy is None or copy.db_name is None or copy.password_enc is None:
            continue
        endpoint = databases_endpoint(settings)
        if endpoint is None:
            raise NotConfigured(server.NOT_CONFIGURED)
        host = endpoint[0] or await host_address()
        env[database.env_var] = server.app_url(
            host, endpoint[1], copy.db_name, crypto.decrypt(copy.password_enc)
        )
    return env


async def delete(*, session: AsyncSession, settings: Settings, database: ManagedDatabase) -> None:
    """Detach a database: its copies are dropped from the server, its backups deleted."""
    for copy in await copies(session=session, database_id=database.id):
        await drop_copy(session=session, settings=settings, database=database, copy=copy)
    await asyncio.to_thread(shutil.rmtree, backups_dir(settings, database.id), True)
    await session.delete(database)


async def drop_copy(
    *, session: AsyncSession, settings: Settings, database: ManagedDatabase, copy: DatabaseCopy
) -> None:
    if database.engine == "postgres" and copy.db_name:
        await server.drop(admin_url(settings), copy.db_name)
    await session.delete(copy)


async def drop_preview(
    *, session: AsyncSession, settings: Settings, project_id: str, scope: str
) -> None:
    """A retired preview branch's own copies."""
    rows = await session.execute(
        select(DatabaseCopy, ManagedDatabase)
        .join(ManagedDatabase, ManagedDatabase.id == DatabaseCopy.database_id)
        .where(DatabaseCopy.project_id == project_id, DatabaseCopy.scope == scope)
    )
    for copy, database in rows.all():
        await drop_copy(session=session, settings=settings, database=database, copy=copy)


async def delete_project_databases(
    *, session: AsyncSession, settings: Settings, project_id: str
) -> None:
    for database in await list_databases(session=session, project_id=project_id):
        await delete(session=session, settings=settings, database=database)
