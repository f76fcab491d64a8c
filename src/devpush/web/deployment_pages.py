"""Deployment pages: a project's deployments (filters, paging, live updates from the project's
event stream), one deployment (status, commit, timings, URLs, the live log view, and cancel /
redeploy / rollback / promote) and the project's log search."""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from fastapi.responses import Response
from markupsafe import Markup, escape
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.deployments import actions, listing
from devpush.deployments import service as deployments
from devpush.deployments.access import load_deployment
from devpush.deployments.models import Alias, AliasType, Conclusion, Deployment, Status
from devpush.errors import Invalid
from devpush.logs.search import Cursor, LogQuery
from devpush.logs.store import LEVELS, utc
from devpush.projects import service as projects
from devpush.projects.access import load_project
from devpush.projects.models import Environment, Project
from devpush.teams.access import Action
from devpush.web.charts import charts
from devpush.web.common import Viewer, ViewerDep, page_router, platform_of, redirect, render
from devpush.web.project_pages import project_context

router = page_router()
Text = Annotated[str, Query(max_length=255)]
STATUS_FILTERS = [
    ("", "Any status"),
    ("succeeded", "Ready"),
    ("failed", "Error"),
    ("deploy", "Building"),
    ("prepare", "Preparing"),
    ("finalize", "Finalizing"),
    ("canceled", "Canceled"),
    ("skipped", "Skipped"),
]


# ---- the list -----------------------------------------------------------------------------------
def _before_date_cursor(day: str) -> str | None:
    """Deployments made on or before `day` (YYYY-MM-DD): a cursor just after that day ends."""
    if not day:
        return None
    try:
        moment = datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(), tzinfo=UTC)
    except ValueError:
        raise Invalid("date: use the format YYYY-MM-DD") from None
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|".encode()).decode()


async def _list(
    session: AsyncSession,
    project: Project,
    *,
    environment: str,
    branch: str,
    status: str,
    day: str,
    cursor: str,
    limit: int = 20,
) -> dict[str, Any]:
    environments = await projects.list_environments(session=session, project_id=project.id)
    env_id = next((e.id for e in environments if environment in (e.id, e.slug)), None)
    if environment and env_id is None:
        raise Invalid(f"environment: this project has no environment {environment[:40]!r}")
    if status not in {value for value, _ in STATUS_FILTERS}:
        raise Invalid("status: choose one of the listed statuses")
    items, next_cursor = await listing.list_page(
        session=session,
        project_id=project.id,
        limit=limit,
        cursor=cursor or _before_date_cursor(day),
        branch=branch or None,
        environment_id=env_id,
        status=status or None,
    )
    query = {
        k: v
        for k, v in {
            "environment": environment,
            "branch": branch,
            "status": status,
            "date": day,
        }.items()
        if v
    }
    if cursor:
        query["cursor"] = cursor
    current_ids = {
        a.deployment_id
        for a in await deployments.project_aliases(session=session, project_id=project.id)
        if a.type == AliasType.environment and a.deployment_id
    }
    return {
        "items": items,
        "current_ids": current_ids,
        "next_cursor": next_cursor,
        "query": query,
        "query_without_cursor": urlencode({k: v for k, v in query.items() if k != "cursor"}),
        "environments": environments,
        "env_names": {e.id: e.name for e in environments},
        "status_filters": STATUS_FILTERS,
    }


@router.get("/projects/{project_id}/deployments")
async def deployments_page(
    project_id: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    environment: Text = "",
    branch: Text = "",
    status: Text = "",
    date: Text = "",
    cursor: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.read
    )
    listing = await _list(
        session, project, environment=environment, branch=branch, status=status, day=date,
        cursor=cursor,
    )  # fmt: skip
    return render(
        request,
        "deployments/list.html",
        **listing,
        **await project_context(viewer, session, project),
    )


@router.get("/projects/{project_id}/deployments/table")
async def deployments_table(
    project_id: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    environment: Text = "",
    branch: Text = "",
    status: Text = "",
    date: Text = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """The first page of the list again (the pages refresh it on live events)."""
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.read
    )
    listing = await _list(
        session, project, environment=environment, branch=branch, status=status, day=date,
        cursor="", limit=limit,
    )  # fmt: skip
    return render(request, "deployments/_table.html", **listing, project=project)


# ---- one deployment -----------------------------------------------------------------------------
async def _deployment_context(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    deployment: Deployment,
    project: Project,
) -> dict[str, Any]:
    platform = platform_of(request)
    environment = (
        await session.get(Environment, deployment.environment_id)
        if deployment.environment_id
        else None
    )
    specs = deployments.alias_specs(project, deployment, environment)
    alias = await _environment_alias(session, environment)
    serving = alias is not None and alias.deployment_id == deployment.id
    live = deployment.conclusion == Conclusion.succeeded and bool(deployment.runtime_handle)
    in_flight = deployment.status != Status.completed
    # Serving: roll back to the one before (if any). Not serving: serve this one again.
    servable = live and deployment.instance_health is None  # not restarting nor crashed
    rollback = bool(alias and alias.previous_deployment_id) if serving else servable
    return {
        **await project_context(viewer, session, project),
        "deployment": deployment,
        "environment": environment,
        "urls": deployments.urls(platform.settings, specs) if live else {},
        "serving": serving,
        "actions": {
            "cancel": in_flight,
            "redeploy": project.status == "active",
            "rollback": environment is not None and rollback,
            "promote": servable and not (environment is not None and environment.is_production),
        },
        "started": deployment.prepare_started_at or deployment.created_at,
    }


async def _environment_alias(
    session: AsyncSession, environment: Environment | None
) -> Alias | None:
    """The alias of the environment's own hostname: what it serves now, and before."""
    if environment is None:
        return None
    aliases = await deployments.environment_aliases(session=session, environment_id=environment.id)
    return next((a for a in aliases if a.type == AliasType.environment), None)


@router.get("/deployments/{deployment_id}")
async def deployment_page(
    deployment_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    deployment, project = await load_deployment(
        session=session, principal=viewer.principal, deployment_id=deployment_id, action=Action.read
    )
    context = await _deployment_context(request, viewer, session, deployment, project)
    return render(request, "deployments/show.html", charts=charts(deployment.id), **context)


@router.get("/deployments/{deployment_id}/summary")
async def deployment_summary(
    deployment_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    deployment, project = await load_deployment(
        session=session, principal=viewer.principal, deployment_id=deployment_id, action=Action.read
    )
    context = await _deployment_context(request, viewer, session, deployment, project)
    return render(request, "deployments/_summary.html", **context)


@router.post("/deployments/{deployment_id}/{action}")
async def deployment_action(
    deployment_id: str, action: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    """cancel, redeploy, rollback or promote: the same flows as the API."""
    if action not in ("cancel", "redeploy", "rollback", "promote"):
        raise Invalid("unknown action")
    deployment, project = await load_deployment(
        session=session,
        principal=viewer.principal,
        deployment_id=deployment_id,
        action=Action.deploy,
    )
    platform = platform_of(request)
    await record(
        session=session,
        principal=viewer.principal,
        action=f"deployment.{action}",
        resource_type="deployment",
        resource_id=deployment.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    if action == "cancel":
        await actions.cancel(platform, session, deployment)
        target = deployment
    elif action == "redeploy":
        target = await actions.create_and_enqueue(
            session=session,
            p=platform,
            principal=viewer.principal,
            project=project,
            branch=deployment.branch,
            commit_sha=deployment.commit_sha,
            trigger="redeploy",
            ip=client_ip(request),
        )
    elif action == "rollback":
        target = await actions.rollback(platform, session, deployment, project)
    else:
        target = await actions.promote(platform, session, deployment, project)
    return redirect(request, f"/deployments/{target.id}")


# ---- log search ---------------------------------------------------------------------------------
def _moment(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        raise Invalid(f"{name}: use a date and time like 2025-01-31T13:45") from None


def highlight(message: str, q: str) -> Markup:
    """The message with the keyword marked (case-insensitive); regex searches stay plain."""
    if not q or q.startswith("/"):
        return escape(message)
    parts = re.split(f"({re.escape(q)})", message, flags=re.IGNORECASE)
    return Markup("").join(
        Markup("<mark>{}</mark>").format(p) if i % 2 else escape(p) for i, p in enumerate(parts)
    )


@router.get("/projects/{project_id}/logs")
async def log_search(
    project_id: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    q: Annotated[str, Query(max_length=500)] = "",
    level: Text = "",
    environment: Text = "",
    branch: Text = "",
    since: Text = "",
    until: Text = "",
    before: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.read
    )
    environments = await projects.list_environments(session=session, project_id=project.id)
    form = {
        "q": q, "level": level, "environment": environment, "branch": branch,
        "since": since, "until": until,
    }  # fmt: skip
    errors: dict[str, str] = {}
    page = None
    try:
        env_id = next((e.id for e in environments if environment in (e.id, e.slug)), None)
        if environment and env_id is None:
            raise Invalid("environment: unknown environment")
        if level and level not in LEVELS:
            raise Invalid("level: unknown level")
        start, end = _moment(since, "since"), _moment(until, "until")
        if start and end and start > end:
            raise Invalid("since: must not be later than until")
        query = LogQuery(
            q=q or None,
            levels=(level,) if level else (),
            environment_id=env_id,
            branch=branch or None,
            since=start,
            until=end,
            before=Cursor.decode(before) if before else None,
            limit=100,
        )
        page = await platform_of(request).log_store.query(
            session=session, project_id=project.id, query=query
        )
    except Invalid as exc:
        field, _, message = exc.message.partition(": ")
        errors[field if message else "q"] = message or exc.message
    kept = {k: v for k, v in form.items() if v}
    context = {
        **await project_context(viewer, session, project),
        "form": form,
        "errors": errors,
        "page": page,
        "levels": LEVELS,
        "environments": environments,
        "env_names": {e.id: e.name for e in environments},
        "older_url": f"?{urlencode({**kept, 'before': page.next_cursor})}"
        if page and page.next_cursor
        else None,
        "highlight": highlight,
    }
    template = "logs/_results.html" if request.headers.get("hx-target") == "results" else None
    status_code = 422 if errors else 200
    return render(request, template or "logs/search.html", status_code=status_code, **context)
