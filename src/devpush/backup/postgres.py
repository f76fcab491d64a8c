"""The platform's PostgreSQL as backup and restore see it: what the database holds, the
pg_dump/pg_restore/psql able to talk to its server, and swapping in a dump's schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from devpush import pgtools
from devpush.db import make_engine, make_sessionmaker
from devpush.errors import ServiceUnavailable
from devpush.runstate import database_url
from devpush.settings import Settings
from devpush.unreachable import reason

PG_TIMEOUT = 3600


@dataclass
class DbInfo:
    server_major: int
    revision: str | None
    projects: int
    shared_teams: int


def libpq_url(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password (which travels in PGPASSWORD, not in argv)."""
    parsed = make_url(url)
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    # URL.set(password=None) means "unchanged"; _replace really drops it.
    plain = parsed.set(drivername="postgresql")._replace(password=None)
    return plain.render_as_string(hide_password=False), env


def _unreachable(settings: Settings, url: str, exc: BaseException) -> ServiceUnavailable:
    where = make_url(url)
    hint = (
        "start the platform with `devpush up --detach` (same DEVPUSH_DATA_DIR)"
        if not settings.database_url
        else "check DEVPUSH_DATABASE_URL and that PostgreSQL is running"
    )
    found = reason(exc)
    answer = found[1] if found else f"{type(exc).__name__}: {exc}".splitlines()[0]
    return ServiceUnavailable(
        f"cannot reach the platform's database at {where.host}:{where.port}/{where.database} "
        f"({answer}); {hint}"
    )


async def _inspect(url: str) -> DbInfo:
    from devpush.models import all_models
    from devpush.projects.models import Project
    from devpush.teams.models import Team

    all_models()
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            version = int(await session.scalar(text("SHOW server_version_num")) or 0)
            tables = set(
                await session.scalars(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            )
            revision = (
                await session.scalar(text("SELECT version_num FROM alembic_version"))
                if "alembic_version" in tables
                else None
            )
            projects = (
                await session.scalar(select(func.count()).select_from(Project))
                if "projects" in tables
                else 0
            )
            shared = (
                await session.scalar(
                    select(func.count()).select_from(Team).where(Team.personal.is_(False))
                )
                if "teams" in tables
                else 0
            )
    finally:
        await engine.dispose()
    return DbInfo(
        server_major=version // 10000,
        revision=revision,
        projects=int(projects or 0),
        shared_teams=int(shared or 0),
    )


def inspect_database(settings: Settings) -> DbInfo:
    url = database_url(settings)
    try:
        return asyncio.run(_inspect(url))
    except (TimeoutError, OSError, SQLAlchemyError) as exc:
        raise _unreachable(settings, url, exc) from None


def pg_tool(settings: Settings, name: str, server_major: int) -> str:
    """pg_dump/pg_restore/psql able to talk to a server of `server_major`: pgserver's bundled
    one for the embedded database, the one on PATH first for an external one."""
    return pgtools.find(name, server_major, path_first=bool(settings.database_url))


def run_pg(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run(
            argv,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable(f"{what} took longer than {PG_TIMEOUT}s") from None
    if result.returncode != 0:
        raise ServiceUnavailable(f"{what} failed: {result.stderr.strip()[-2000:]}")


def replace_database(settings: Settings, dump: Path, server_major: int) -> None:
    """Replace the public schema with the dump's, in one transaction: on any error the
    database is left as it was."""
    url = database_url(settings)
    libpq, env = libpq_url(url)
    pg_restore = pg_tool(settings, "pg_restore", server_major)
    psql = pg_tool(settings, "psql", server_major)
    with tempfile.TemporaryDirectory(prefix=".devpush-restore-sql-", dir=dump.parent) as tmp:
        script = Path(tmp) / "restore.sql"
        run_pg(
            [pg_restore, "--no-owner", "--no-acl", f"--file={script}", str(dump)],
            env,
            "pg_restore (reading the dump)",
        )
        run_pg(
            [
                psql,
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                "--command=DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;",
                f"--file={script}",
                f"--dbname={libpq}",
            ],
            env,
            "restoring the database",
        )
