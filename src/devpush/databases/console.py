"""The database console: an environment's copy of a managed database, browsed (its tables, a
page of a table's rows) and queried one statement at a time. Postgres is reached as the copy's
own role (never the admin), SQLite through the file on the environment's volume; both are
read-only unless `write`, and every statement has a time limit."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import crypto
from devpush.databases import server, service
from devpush.databases.console_schemas import QueryResult, RowsPage, TableRead
from devpush.databases.models import DatabaseCopy, ManagedDatabase
from devpush.errors import Invalid, NotFound
from devpush.platform import Platform
from devpush.projects.models import Environment, Project

TIMEOUT = 5.0  # seconds per statement
MAX_ROWS = 500  # a query's rows returned
PAGE_ROWS = 100  # a table page's rows
MAX_VALUE = 10_000  # characters of one value
READ_ONLY = "read-only: {}; admins can run it with write"
TOO_LONG = f"the statement ran longer than {TIMEOUT:.0f} s and was canceled"
PG_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}
PG_TABLES = """
SELECT n.nspname, c.relname, c.relkind::text, c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname <> 'public', n.nspname, c.relname
"""
PG_PRIMARY_KEY = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = $1::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)
"""
SQLITE_TABLES = (
    "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    name: str
    password: str


@dataclass(frozen=True)
class Sqlite:
    path: Path


Copy = Postgres | Sqlite


async def locate(
    *,
    session: AsyncSession,
    p: Platform,
    database: ManagedDatabase,
    project: Project,
    environment: str,
) -> Copy:
    """The environment's copy of the database, by the environment's name."""
    env = await session.scalar(
        select(Environment).where(
            Environment.project_id == project.id, Environment.name == environment
        )
    )
    if env is None:
        raise NotFound(f"this project has no environment {environment!r}")
    if database.engine == "postgres":
        copy = await session.scalar(
            select(DatabaseCopy).where(
                DatabaseCopy.database_id == database.id, DatabaseCopy.scope == env.id
            )
        )
        if copy is None or copy.db_name is None or copy.password_enc is None:
            raise NotFound(
                f"{database.name} has no copy in {env.name} yet: it is made at the "
                "environment's first deployment"
            )
        admin = urlsplit(service.admin_url(p.settings))
        return Postgres(
            admin.hostname or "127.0.0.1",
            admin.port or 5432,
            copy.db_name,
            crypto.decrypt(copy.password_enc),
        )
    path = await service.sqlite_file(p, project, database, env.id)
    if path is None:
        raise NotFound(
            f"the volume {database.volume!r} holds no data for {env.name} on this machine yet "
            "(a deployment of the environment makes it)"
        )
    return Sqlite(path)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def json_safe(value: Any) -> Any:
    """A value as JSON can carry it: text for bytes, decimals, dates, UUIDs and the like."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value[:MAX_VALUE]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value)[: MAX_VALUE // 2].hex()
    if isinstance(value, list | tuple | asyncpg.Record):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)[:MAX_VALUE]


def _find(found: list[TableRead], table: str) -> TableRead:
    for candidate in found:
        if table in (candidate.key, f"{candidate.schema_}.{candidate.name}"):
            return candidate
    raise NotFound(f"no table {table!r} in this database; GET .../tables lists them")


async def tables(copy: Copy) -> list[TableRead]:
    if isinstance(copy, Sqlite):
        return await asyncio.to_thread(_sqlite_tables, copy.path)
    async with _pg(copy, write=False) as conn:
        records = await _pg_run(conn.fetch(PG_TABLES, timeout=TIMEOUT))
    return [
        TableRead(
            schema_=schema,
            name=name,
            key=name if schema == "public" else f"{schema}.{name}",
            kind=PG_KINDS.get(kind, kind),
            estimated_rows=estimate if estimate >= 0 else None,
        )
        for schema, name, kind, estimate in records
    ]


async def rows(copy: Copy, table: str, limit: int = PAGE_ROWS, offset: int = 0) -> RowsPage:
    """A page of a table's rows (ordered by its primary key where it has one). The table must
    be one `tables` lists: its name is quoted, never taken as SQL."""
    found = _find(await tables(copy), table)
    limit = max(1, min(limit, PAGE_ROWS))
    offset = max(0, offset)
    if isinstance(copy, Sqlite):
        columns, records = await asyncio.to_thread(
            _sqlite_page, copy.path, found.name, limit, offset
        )
    else:
        ident = f"{quote_ident(found.schema_)}.{quote_ident(found.name)}"
        async with _pg(copy, write=False) as conn:
            keys = await _pg_run(conn.fetch(PG_PRIMARY_KEY, ident, timeout=TIMEOUT))
            order = " ORDER BY " + ", ".join(quote_ident(k[0]) for k in keys) if keys else ""
            statement = await _pg_run(
                conn.prepare(f"SELECT * FROM {ident}{order} LIMIT $1 OFFSET $2", timeout=TIMEOUT)
            )
            records = await _pg_run(statement.fetch(limit + 1, offset, timeout=TIMEOUT))
            columns = [a.name for a in statement.get_attributes()]
    return RowsPage(
        table=found.key,
        columns=columns,
        rows=[json_safe(r) for r in records[:limit]],
        limit=limit,
        offset=offset,
        has_more=len(records) > limit,
    )


async def query(copy: Copy, sql: str, *, write: bool) -> QueryResult:
    """One statement: read-only (and rolled back) unless `write`, at most MAX_ROWS rows back,
    the database's errors as Invalid with its message."""
    if isinstance(copy, Sqlite):
        return await asyncio.to_thread(_sqlite_query, copy.path, sql, write)
    async with _pg(copy, write=write) as conn:
        started = time.monotonic()
        statement = await _pg_run(conn.prepare(sql, timeout=TIMEOUT))
        columns = [a.name for a in statement.get_attributes()]
        count: int | None
        if columns:  # rows come back: read no more of them than shown
            cursor = await _pg_run(statement.cursor(timeout=TIMEOUT))
            records = await _pg_run(cursor.fetch(MAX_ROWS + 1, timeout=TIMEOUT))
            status, count = f"{len(records[:MAX_ROWS])} rows", len(records[:MAX_ROWS])
        else:
            records = await _pg_run(statement.fetch(timeout=TIMEOUT))
            status = statement.get_statusmsg()
            last = status.rsplit(" ", 1)[-1]
            count = int(last) if last.isdigit() else None
        elapsed = (time.monotonic() - started) * 1000
    return QueryResult(
        columns=columns,
        rows=[json_safe(r) for r in records[:MAX_ROWS]],
        truncated=len(records) > MAX_ROWS,
        rowcount=count,
        status=status,
        elapsed_ms=round(elapsed, 2),
    )


# ---- postgres ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _pg(copy: Postgres, *, write: bool) -> AsyncIterator[Any]:
    """A connection as the copy's role, in a transaction with the statement timeout; a
    read-only one is always rolled back, a written one committed when the statement worked."""
    url = server.app_url(copy.host, copy.port, copy.name, copy.password)
    async with server.connect(url) as conn:
        await conn.execute("BEGIN" if write else "BEGIN READ ONLY")
        await conn.execute(f"SET LOCAL statement_timeout = {int(TIMEOUT * 1000)}")
        yield conn  # on an error, closing the connection rolls the transaction back
        await _pg_run(conn.execute("COMMIT" if write else "ROLLBACK"))


async def _pg_run(step: Any) -> Any:
    """Await one step, its errors as Invalid (the database's words, no traceback)."""
    try:
        return await step
    except asyncpg.ReadOnlySQLTransactionError as exc:
        raise Invalid(READ_ONLY.format(exc), code="read_only") from None
    except (asyncpg.QueryCanceledError, TimeoutError):
        raise Invalid(TOO_LONG, code="timeout") from None
    except asyncpg.PostgresError as exc:
        detail = "; ".join(str(x) for x in (exc, exc.detail, exc.hint) if x)
        raise Invalid(detail, code="database_error") from None
    except asyncpg.InterfaceError as exc:
        raise Invalid(str(exc), code="database_error") from None


# ---- sqlite --------------------------------------------------------------------------------------
def _deny_attach(action: int, *_: object) -> int:
    """No other file may be opened through the console (ATTACH, VACUUM INTO)."""
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _sqlite_open(path: Path, write: bool) -> sqlite3.Connection:
    """The file, read-only unless `write`; never through a link the app put there."""
    link = service.sqlite_link(path)
    if link is not None:
        raise Invalid(f"{link} is a symbolic link; the console opens only files")
    if not path.is_file():
        raise NotFound(f"there is no SQLite file {path.name} on the volume yet")
    mode = "rw" if write else "ro"
    try:
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode={mode}", uri=True, isolation_level=None, timeout=TIMEOUT
        )
    except sqlite3.Error as exc:
        raise Invalid(f"cannot open {path.name}: {exc}", code="database_error") from None
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_deny_attach)
    if not write:
        conn.execute("PRAGMA query_only = ON")
    deadline = time.monotonic() + TIMEOUT
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    return conn


def _sqlite_error(exc: sqlite3.Error) -> Invalid:
    message = str(exc)
    if message == "interrupted":
        return Invalid(TOO_LONG, code="timeout")
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_READONLY or "readonly" in message:
        return Invalid(READ_ONLY.format(message), code="read_only")
    return Invalid(message, code="database_error")


def _sqlite_tables(path: Path) -> list[TableRead]:
    conn = _sqlite_open(path, write=False)
    try:
        found = conn.execute(SQLITE_TABLES).fetchall()
    except sqlite3.Error as exc:
        raise _sqlite_error(exc) from None
    finally:
        conn.close()
    return [
        TableRead(schema_="main", name=name, key=name, kind=kind, estimated_rows=None)
        for name, kind in found
    ]


def _sqlite_page(path: Path, table: str, limit: int, offset: int) -> tuple[list[str], list[Any]]:
    conn = _sqlite_open(path, write=False)
    try:
        cursor = conn.execute(
            f"SELECT * FROM {quote_ident(table)} LIMIT ? OFFSET ?", (limit + 1, offset)
        )
        return [d[0] for d in cursor.description], cursor.fetchall()
    except sqlite3.Error as exc:
        raise _sqlite_error(exc) from None
    finally:
        conn.close()


def _sqlite_query(path: Path, sql: str, write: bool) -> QueryResult:
    conn = _sqlite_open(path, write)
    try:
        started = time.monotonic()
        cursor = conn.execute(sql)
        columns = [d[0] for d in cursor.description or ()]
        records = cursor.fetchmany(MAX_ROWS + 1) if columns else []
        elapsed = (time.monotonic() - started) * 1000
    except sqlite3.Error as exc:
        raise _sqlite_error(exc) from None
    finally:
        conn.close()
    shown = records[:MAX_ROWS]
    count = len(shown) if columns else (cursor.rowcount if cursor.rowcount >= 0 else None)
    return QueryResult(
        columns=columns,
        rows=[json_safe(r) for r in shown],
        truncated=len(records) > MAX_ROWS,
        rowcount=count,
        status=f"{len(shown)} rows" if columns else "OK" if count is None else f"{count} changed",
        elapsed_ms=round(elapsed, 2),
    )
