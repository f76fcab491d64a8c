"""The platform's role and database in the embedded PostgreSQL, set up by `devpush up` as the
superuser before the app starts."""

from __future__ import annotations

import time
from typing import Any

from devpush.runstate import APP_DATABASE, APP_ROLE, TENANTS_ROLE, embedded_password
from devpush.settings import Settings


def _literal(value: str) -> str:
    """A SQL string literal (CREATE/ALTER ROLE take no parameters)."""
    return "'" + value.replace("'", "''") + "'"


# Everything in the public schema the platform's role does not own yet (a database made by an
# older version, whose tables the superuser owns): tables first (their sequences follow), then
# types and routines that are not part of an extension.
_NOT_OWNED = """
    SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind::text = ANY($1::text[])
      AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)
"""
_TYPES_NOT_OWNED = """
    SELECT t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r')
      AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
"""
_ROUTINES_NOT_OWNED = """
    SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public' AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
"""


async def _ensure_role_and_database(conn: Any, password: str) -> None:
    role = APP_ROLE
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        await conn.execute(f"ALTER ROLE {role} {attributes} PASSWORD {_literal(password)}")
    else:
        await conn.execute(f"CREATE ROLE {role} {attributes} PASSWORD {_literal(password)}")
    if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", APP_DATABASE):
        await conn.execute(f"ALTER DATABASE {APP_DATABASE} OWNER TO {role}")
    else:
        await conn.execute(f"CREATE DATABASE {APP_DATABASE} OWNER {role}")


# Who may connect, from where (written at every start; edits are lost). The platform's role and
# the superuser: loopback only. A managed database's role (a member of TENANTS_ROLE): its own
# database alone (`sameuser`), from loopback and the private ranges apps live in. Nothing else.
_TENANT_SOURCES = ("127.0.0.1/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def pg_hba() -> str:
    lines = [
        "# Written by devpush at every start of the embedded PostgreSQL: edits are lost.",
        "host all postgres 127.0.0.1/32 scram-sha-256",
        f"host {APP_DATABASE} {APP_ROLE} 127.0.0.1/32 scram-sha-256",
        f"host all postgres,{APP_ROLE} all reject",
        *(f"host sameuser +{TENANTS_ROLE} {net} scram-sha-256" for net in _TENANT_SOURCES),
        "host all all all reject",
    ]
    return "\n".join(lines) + "\n"


async def _hand_over_schema(conn: Any) -> None:
    """The platform's role owns the public schema and everything in it (Alembic runs as it)."""
    role = APP_ROLE
    await conn.execute(f"ALTER SCHEMA public OWNER TO {role}")
    for kinds in (["r", "p", "v", "m", "f"], ["S"]):
        for name in await conn.fetch(_NOT_OWNED, kinds, role):
            await conn.execute(f"ALTER TABLE {name[0]} OWNER TO {role}")
    for name in await conn.fetch(_TYPES_NOT_OWNED, role):
        await conn.execute(f"ALTER TYPE {name[0]} OWNER TO {role}")
    for name in await conn.fetch(_ROUTINES_NOT_OWNED, role):
        await conn.execute(f"ALTER ROUTINE {name[0]} OWNER TO {role}")


def prepare_database(settings: Settings) -> None:
    """Idempotently, as the superuser: the platform's role (LOGIN, no other attribute) with its
    own password, owning the platform's database, its public schema and every object in it.
    Runs on every start, so a data directory made by an older version (where the platform
    used the superuser) is converted in place."""
    import asyncio

    import asyncpg

    port = settings.embedded_db_port
    superuser = embedded_password(settings, "db")
    app_password = embedded_password(settings, "db_app")

    async def connect(database: str) -> Any:
        return await asyncpg.connect(
            host="127.0.0.1", port=port, user="postgres", password=superuser, database=database
        )

    async def prepare() -> None:
        conn = await connect("postgres")
        try:
            await _ensure_role_and_database(conn, app_password)
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", TENANTS_ROLE):
                await conn.execute(f"CREATE ROLE {TENANTS_ROLE} NOLOGIN")
        finally:
            await conn.close()
        conn = await connect(APP_DATABASE)
        try:
            async with conn.transaction():
                await _hand_over_schema(conn)
        finally:
            await conn.close()

    deadline = time.monotonic() + 30
    while True:
        try:
            asyncio.run(prepare())
            return
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
