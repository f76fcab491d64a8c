"""Log routes: search a project's lines, and the live SSE streams of a deployment (status and
log lines) and of a project (deployments created, status changes, alias switches)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from devpush.api.deps import PlatformDep, SessionDep
from devpush.auth.deps import PrincipalDep
from devpush.deployments import sse
from devpush.deployments.access import load_deployment
from devpush.errors import Invalid
from devpush.logs.schemas import LogLinePage, LogLineRead
from devpush.logs.search import Cursor, LogQuery
from devpush.logs.store import LEVELS, utc
from devpush.projects import service as projects
from devpush.projects.access import load_project
from devpush.teams.access import Action

router = APIRouter(tags=["logs"])
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "An SSE stream"}
}
LastEventId = Annotated[
    str | None,
    Header(max_length=64, description="Sent by EventSource on reconnect: resume after it."),
]


@router.get("/projects/{project_id}/logs", response_model=LogLinePage)
async def search_logs(
    project_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    q: Annotated[
        str | None,
        Query(
            max_length=500,
            description="A keyword (case-insensitive), or a regular expression as /re/ "
            "(/re/i ignores case).",
        ),
    ] = None,
    level: Annotated[
        str | None, Query(max_length=60, description="One level or several: warn,error")
    ] = None,
    deployment: Annotated[str | None, Query(max_length=32)] = None,
    environment: Annotated[str | None, Query(max_length=40, description="Id or name")] = None,
    branch: Annotated[str | None, Query(max_length=255)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; UTC if no zone")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; UTC if no zone")] = None,
    before_cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LogLinePage:
    """A project's log lines, newest first, paged backwards with `before_cursor`. With
    `deployment`, in that deployment's own order (its sequence numbers, the SSE event ids)."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    since, until = (utc(since) if since else None), (utc(until) if until else None)
    if since and until and since > until:
        raise Invalid("since must not be later than until")
    query = LogQuery(
        q=q,
        levels=_levels(level),
        deployment_id=deployment,
        environment_id=await _environment_id(session, project.id, environment),
        branch=branch,
        since=since,
        until=until,
        before=Cursor.decode(before_cursor) if before_cursor else None,
        limit=limit,
    )
    page = await platform.log_store.query(session=session, project_id=project.id, query=query)
    return LogLinePage(
        items=[LogLineRead.model_validate(line.to_json()) for line in page.items],
        next_cursor=page.next_cursor,
    )


def _levels(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    levels = tuple(sorted({v.strip().lower() for v in value.split(",") if v.strip()}))
    unknown = [v for v in levels if v not in LEVELS]
    if unknown:
        raise Invalid(f"level: unknown {unknown[0][:20]!r}; use {', '.join(LEVELS)}")
    return levels


async def _environment_id(session: AsyncSession, project_id: str, ref: str | None) -> str | None:
    if not ref:
        return None
    for env in await projects.list_environments(session=session, project_id=project_id):
        if ref in (env.id, env.slug):
            return env.id
    raise Invalid(f"environment: this project has no environment {ref!r}")


@router.get(
    "/deployments/{deployment_id}/events",
    response_class=EventSourceResponse,
    responses=SSE_RESPONSE,
)
async def deployment_events(
    deployment_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """`status`, then the stored `log` lines (id = sequence number), then new lines and status
    changes live; `end` when the deployment is deleted, or when it concluded other than
    succeeded and its last lines are out."""
    deployment, _ = await load_deployment(
        session=session, principal=principal, deployment_id=deployment_id, action=Action.read
    )
    after = sse.after_seq(last_event_id)
    return EventSourceResponse(
        sse.deployment_events(
            p=platform, principal=principal, deployment_id=deployment.id, after=after
        ),
        ping=sse.HEARTBEAT_SECONDS,
        send_timeout=30,
    )


@router.get(
    "/projects/{project_id}/events", response_class=EventSourceResponse, responses=SSE_RESPONSE
)
async def project_events(
    project_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """`ready`, then `deployment.created`, `deployment.status` and `alias` events live."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    after = sse.after_position(last_event_id)
    return EventSourceResponse(
        sse.project_events(p=platform, principal=principal, project_id=project.id, after=after),
        ping=sse.HEARTBEAT_SECONDS,
        send_timeout=30,
    )
