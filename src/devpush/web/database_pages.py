"""The project's Databases page: its managed databases with each environment's copy, and for
one database and environment its tables, a page of a table's rows and a SQL console (read-only
for members; admins may tick "write", which is audited)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.databases import console
from devpush.databases import service as databases
from devpush.databases.console_schemas import MAX_SQL, QueryIn, QueryResult
from devpush.databases.models import ManagedDatabase
from devpush.databases.routes import database_read
from devpush.errors import DevpushError, NotFound
from devpush.projects import service as projects
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.teams.access import Action
from devpush.web.common import Viewer, ViewerDep, form_text, page_router, platform_of, render
from devpush.web.project_pages import project_context

router = page_router()


def _pick(rows: list[ManagedDatabase], database_id: str | None) -> ManagedDatabase | None:
    if not rows:
        return None
    if database_id is None:
        return rows[0]
    found = next((row for row in rows if row.id == database_id), None)
    if found is None:
        raise NotFound("this project has no such database")
    return found


async def _page(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    project: Project,
    *,
    database_id: str | None,
    environment: str | None,
    table: str | None = None,
    offset: int = 0,
    sql: str = "",
    write: bool = False,
    result: QueryResult | None = None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    rows = await databases.list_databases(session=session, project_id=project.id)
    chosen = _pick(rows, database_id)
    environments = await projects.list_environments(session=session, project_id=project.id)
    if environment is None:
        environment = next((e.name for e in environments if e.is_production), None) or (
            environments[0].name if environments else "production"
        )
    context: dict[str, Any] = {"tables": [], "page": None, "browse_error": ""}
    if chosen is not None:
        try:
            copy = await console.locate(
                session=session,
                p=platform_of(request),
                database=chosen,
                project=project,
                environment=environment,
            )
            context["tables"] = await console.tables(copy)
            if table:
                context["page"] = await console.rows(copy, table[:300], console.PAGE_ROWS, offset)
        except DevpushError as exc:
            context["browse_error"] = exc.message
    return render(
        request,
        "databases/index.html",
        status_code=status_code,
        **await project_context(viewer, session, project),
        **context,
        databases=[await database_read(session, row, project) for row in rows],
        chosen=chosen,
        environments=environments,
        environment=environment,
        table=table,
        sql=sql,
        write=write,
        result=result,
        error=error,
        max_sql=MAX_SQL,
    )


def _offset(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 10 else 0


@router.get("/projects/{project_id}/databases")
async def databases_page(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.read
    )
    params = request.query_params
    return await _page(
        request,
        viewer,
        session,
        project,
        database_id=params.get("database") or None,
        environment=(params.get("environment") or "")[:63] or None,
        table=params.get("table") or None,
        offset=_offset(params.get("offset")),
    )


@router.post("/projects/{project_id}/databases/query")
async def run_query(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    """Runs the statement and shows its result, or the database's error, under the form."""
    form = await request.form()
    write = form.get("write") in ("on", "true", "1")
    project = await load_project(
        session=session,
        principal=viewer.principal,
        project_id=project_id,
        action=Action.manage if write else Action.deploy,
    )
    database_id = form_text(form, "database_id", 64)
    environment = form_text(form, "environment", 63) or "production"
    sql = form_text(form, "sql", MAX_SQL + 1)
    chosen = _pick(
        await databases.list_databases(session=session, project_id=project.id), database_id or None
    )
    if chosen is None:
        raise NotFound("this project has no managed database yet")

    async def page(**outcome: Any) -> Response:
        return await _page(
            request,
            viewer,
            session,
            project,
            database_id=chosen.id,
            environment=environment,
            sql=sql,
            write=write,
            **outcome,
        )

    try:
        body = QueryIn.model_validate({"sql": sql, "environment": environment, "write": write})
        copy = await console.locate(
            session=session,
            p=platform_of(request),
            database=chosen,
            project=project,
            environment=body.environment,
        )
        if write:  # who changed what, whether or not the statement works
            await record(
                session=session,
                principal=viewer.principal,
                action="database.query",
                resource_type="database",
                resource_id=chosen.id,
                team_id=project.team_id,
                ip=client_ip(request),
                data={"environment": body.environment, "sql": body.sql[:2000]},
            )
            await session.commit()
        result = await console.query(copy, body.sql, write=body.write)
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        return await page(error=f"sql: {message}", status_code=422)
    except DevpushError as exc:
        return await page(error=exc.message, status_code=422)
    return await page(result=result)
