"""The PostgreSQL server that holds managed databases, driven as its admin role: a database
and a login role of the same name per copy, the role a member of TENANTS_ROLE (what
pg_hba.conf admits from apps' networks), the database closed to PUBLIC. Names are made here
(`dp_` and an id), never from user input."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg

from devpush.errors import Conflict
from devpush.runstate import TENANTS_ROLE

_NAME = re.compile(r"^dp_[a-z0-9]{1,40}$")
NOT_CONFIGURED = (
    "managed PostgreSQL needs a server: set DEVPUSH_DATABASES_ADMIN_URL to a superuser (or a "
    "role with CREATEDB and CREATEROLE) on the server that should hold them"
)


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a managed database name: {name!r}")
    return f'"{name}"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@contextlib.asynccontextmanager
async def connect(url: str, database: str | None = None) -> AsyncIterator[Any]:
    parts = urlsplit(url)
    try:
        conn = await asyncpg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password,
            database=database or parts.path.lstrip("/") or "postgres",
            timeout=10,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Conflict(
            f"the managed databases' PostgreSQL at {parts.hostname}:{parts.port} can't be "
            f"reached ({type(exc).__name__}: {exc}); check that it runs, or "
            "DEVPUSH_DATABASES_ADMIN_URL"
        ) from exc
    try:
        yield conn
    finally:
        await conn.close()


async def create(admin_url: str, name: str, password: str) -> None:
    """The role and its database, idempotently (a retried create finds them made)."""
    ident = _ident(name)
    async with connect(admin_url) as conn:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", TENANTS_ROLE):
            await conn.execute(f'CREATE ROLE "{TENANTS_ROLE}" NOLOGIN')
        attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
            await conn.execute(f"ALTER ROLE {ident} {attributes} PASSWORD {_literal(password)}")
        else:
            await conn.execute(
                f"CREATE ROLE {ident} {attributes} CONNECTION LIMIT 50 "
                f"PASSWORD {_literal(password)}"
            )
        await conn.execute(f'GRANT "{TENANTS_ROLE}" TO {ident}')
        await conn.execute(f"GRANT {ident} TO CURRENT_USER")  # to own, dump and drop it
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"CREATE DATABASE {ident} OWNER {ident} ENCODING 'UTF8'")
        await conn.execute(f"REVOKE ALL ON DATABASE {ident} FROM PUBLIC")
        await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {ident} TO {ident}")
    async with connect(admin_url, name) as conn:
        await conn.execute(f"ALTER SCHEMA public OWNER TO {ident}")


async def drop(admin_url: str, name: str) -> None:
    """The database (its sessions ended first) and its role. Idempotent."""
    ident = _ident(name)
    async with connect(admin_url) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await conn.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
        await conn.execute(f"DROP ROLE IF EXISTS {ident}")


def app_url(host: str, port: int, name: str, password: str) -> str:
    """What an app gets as DATABASE_URL."""
    return f"postgresql://{name}:{quote(password, safe='')}@{host}:{port}/{name}"
