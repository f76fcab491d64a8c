"""The database console's routes: an environment's tables, a page of a table's rows, and one
SQL statement (members read; a statement run with `write` needs admin rights and is audited).
Another team's database answers 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from devpush.api.deps import PlatformDep, SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.databases import console
from devpush.databases.access import load_database
from devpush.databases.console_schemas import QueryIn, QueryResult, RowsPage, TableRead
from devpush.teams.access import Action

router = APIRouter(tags=["databases"])
EnvironmentQuery = Annotated[str, Query(min_length=1, max_length=63)]


@router.get("/databases/{database_id}/tables", response_model=list[TableRead])
async def list_tables(
    database_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    environment: EnvironmentQuery = "production",
) -> list[TableRead]:
    """The tables (and views) of the environment's copy; postgres estimates their rows."""
    database, project = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.read
    )
    copy = await console.locate(
        session=session, p=platform, database=database, project=project, environment=environment
    )
    return await console.tables(copy)


@router.get("/databases/{database_id}/tables/{table:path}", response_model=RowsPage)
async def table_rows(
    database_id: str,
    table: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    environment: EnvironmentQuery = "production",
    limit: Annotated[int, Query(ge=1, le=console.PAGE_ROWS)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> RowsPage:
    """A page of a table's rows; `table` is a name GET .../tables lists (name, or
    schema.name)."""
    database, project = await load_database(
        session=session, principal=principal, database_id=database_id, action=Action.read
    )
    copy = await console.locate(
        session=session, p=platform, database=database, project=project, environment=environment
    )
    return await console.rows(copy, table[:300], limit, offset)


@router.post("/databases/{database_id}/query", response_model=QueryResult)
async def run_query(
    database_id: str,
    body: QueryIn,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> QueryResult:
    """One SQL statement, as the copy's own role, within 5 seconds. Read-only (and rolled
    back) unless `write`, which needs admin rights; at most 500 rows come back."""
    database, project = await load_database(
        session=session,
        principal=principal,
        database_id=database_id,
        action=Action.manage if body.write else Action.deploy,
    )
    copy = await console.locate(
        session=session,
        p=platform,
        database=database,
        project=project,
        environment=body.environment,
    )
    if body.write:  # who changed what, whether or not the statement works
        await record(
            session=session,
            principal=principal,
            action="database.query",
            resource_type="database",
            resource_id=database.id,
            team_id=project.team_id,
            ip=client_ip(request),
            data={"environment": body.environment, "sql": body.sql[:2000]},
        )
        await session.commit()
    return await console.query(copy, body.sql, write=body.write)
