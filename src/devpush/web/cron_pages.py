"""The project's cron page: the jobs each environment's live deployment declares, with their
next and last run, the recent runs, the jobs declared in the settings (devpush.toml
`[[cron]]` overrides them for its commit), and running a job now."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.cron import service
from devpush.cron.models import CronRun
from devpush.cron.routes import jobs, run_read
from devpush.db import utcnow
from devpush.errors import Invalid
from devpush.projects import cron as cron_rules
from devpush.projects import service as projects
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.projects.schemas import ProjectUpdate
from devpush.teams.access import Action
from devpush.web.common import Viewer, ViewerDep, flash, form_text, page_router, redirect, render
from devpush.web.project_pages import project_context

router = page_router()


def declaration_lines(config: dict[str, Any]) -> str:
    return "\n".join(
        f"{j['name']} | {j['schedule']} | {j['timeout']} | {j['command']}"
        for j in cron_rules.declared(config)
    )


def parse_lines(text: str) -> list[dict[str, Any]]:
    """`name | schedule | timeout | command` lines (the command last: it may hold '|'); the
    rules are ProjectUpdate's."""
    found: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|", 3)]
        if len(parts) != 4 or not parts[2].isdigit():
            raise Invalid(
                f"line {number}: write name | schedule | timeout in seconds | command, e.g. "
                "nightly | 0 3 * * * | 600 | python manage.py clearsessions"
            )
        found.append(
            {"name": parts[0], "schedule": parts[1], "timeout": int(parts[2]), "command": parts[3]}
        )
    return found


async def _page(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    project: Project,
    *,
    error: str = "",
    text: str | None = None,
    status_code: int = 200,
) -> Response:
    rows, _ = await service.runs(session=session, project_id=project.id, limit=30)
    names = {
        e.id: e.name
        for e in await projects.list_environments(session=session, project_id=project.id)
    }
    return render(
        request,
        "projects/cron.html",
        status_code=status_code,
        **await project_context(viewer, session, project),
        jobs=await jobs(session, project.id),
        runs=[run_read(r, names) for r in rows],
        declaration=declaration_lines(project.config) if text is None else text,
        error=error,
    )


@router.get("/projects/{project_id}/cron")
async def cron_page(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.read
    )
    return await _page(request, viewer, session, project)


@router.post("/projects/{project_id}/cron")
async def save_jobs(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.manage
    )
    text = form_text(await request.form(), "cron", 16384)
    try:
        body = ProjectUpdate.model_validate({"cron": parse_lines(text)})
        async with session.begin_nested():
            await projects.update_project(session=session, project=project, body=body)
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        await session.refresh(project)
        return await _page(
            request, viewer, session, project, error=message, text=text, status_code=422
        )
    except Invalid as exc:
        await session.refresh(project)
        return await _page(
            request, viewer, session, project, error=exc.message, text=text, status_code=422
        )
    await record(
        session=session,
        principal=viewer.principal,
        action="project.update",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"section": "cron"},
    )
    await session.commit()
    flash(request, "Saved: the jobs apply from the next deployment of each environment.")
    return redirect(request, f"/projects/{project.id}/cron")


@router.post("/projects/{project_id}/cron/{job}/run")
async def run_job(
    project_id: str, job: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.deploy
    )
    environment_id = form_text(await request.form(), "environment_id", 64)
    target = next(
        (
            t
            for t in await service.live(session=session, project_id=project.id)
            if t.environment.id == environment_id
        ),
        None,
    )
    declared = next((j for j in target.jobs if j["name"] == job), None) if target else None
    if target is None or declared is None:
        flash(request, f"No live deployment declares the job {job!r} there; deploy first.", "error")
        return redirect(request, f"/projects/{project.id}/cron")
    run_id = await service.claim(
        session=session, target=target, job=declared, scheduled_at=utcnow(), status="queued"
    )
    row = await session.get(CronRun, run_id)
    await session.commit()
    flash(request, f"Queued run #{(row.id if row else '')[:8]} of {job}: it starts within seconds.")
    return redirect(request, f"/projects/{project.id}/cron")
