"""Cron routes: the jobs of each environment's live deployment, their runs, and running one now
(deploy rights). Another team's project answers 404, like every project route."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from devpush.api.deps import SessionDep
from devpush.auth.deps import PrincipalDep
from devpush.cron import service
from devpush.cron.models import CronRun
from devpush.cron.schemas import CronJobRead, CronRunPage, CronRunRead
from devpush.db import utcnow
from devpush.errors import Conflict, NotFound
from devpush.projects import cron as cron_rules
from devpush.projects.access import load_project
from devpush.projects.models import Environment
from devpush.teams.access import Action

router = APIRouter(tags=["cron"])


def run_read(row: CronRun, names: dict[str, str]) -> CronRunRead:
    duration = None
    if row.started_at and row.finished_at:
        duration = round((row.finished_at - row.started_at).total_seconds(), 3)
    return CronRunRead(
        id=row.id,
        job=row.job,
        environment_id=row.environment_id,
        environment=names.get(row.environment_id),
        deployment_id=row.deployment_id,
        command=row.command,
        scheduled_at=row.scheduled_at,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration=duration,
        exit_code=row.exit_code,
        error=row.error,
    )


async def _names(session: SessionDep, project_id: str) -> dict[str, str]:
    rows = await session.execute(
        select(Environment.id, Environment.name).where(Environment.project_id == project_id)
    )
    return {env_id: name for env_id, name in rows.all()}


async def jobs(session: SessionDep, project_id: str) -> list[CronJobRead]:
    """Every job of each environment's live deployment, with its next and last run."""
    last = await service.last_runs(session=session, project_id=project_id)
    names = await _names(session, project_id)
    now = utcnow()
    found = []
    for target in await service.live(session=session, project_id=project_id):
        env = target.environment
        for job in target.jobs:
            previous = last.get((env.id, job["name"]))
            found.append(
                CronJobRead(
                    name=job["name"],
                    environment=env.name,
                    environment_id=env.id,
                    deployment_id=target.deployment.id,
                    schedule=job["schedule"],
                    command=job["command"],
                    timeout=job["timeout"],
                    next_run_at=cron_rules.next_slot(job["schedule"], now),
                    last_run=run_read(previous, names) if previous else None,
                )
            )
    return found


@router.get("/projects/{project_id}/cron", response_model=list[CronJobRead])
async def list_jobs(project_id: str, session: SessionDep, principal: PrincipalDep) -> object:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    return await jobs(session, project.id)


@router.get("/projects/{project_id}/cron/runs", response_model=CronRunPage)
async def list_runs(
    project_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    job: Annotated[str | None, Query(max_length=63)] = None,
    environment: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> object:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    environment_id = None
    if environment is not None:
        env = await service.environment_named(
            session=session, project_id=project.id, name=environment
        )
        if env is None:
            raise NotFound(f"this project has no environment {environment!r}")
        environment_id = env.id
    rows, next_cursor = await service.runs(
        session=session,
        project_id=project.id,
        job=job,
        environment_id=environment_id,
        limit=limit,
        cursor=cursor,
    )
    names = await _names(session, project.id)
    return CronRunPage(items=[run_read(r, names) for r in rows], next_cursor=next_cursor)


@router.post("/projects/{project_id}/cron/{job}/run", response_model=CronRunRead, status_code=202)
async def run_now(
    project_id: str,
    job: str,
    session: SessionDep,
    principal: PrincipalDep,
    environment: Annotated[str, Query(max_length=63)] = "production",
) -> object:
    """Queues a run of the job in the environment's live deployment; a scheduler starts it
    within seconds (GET .../cron/runs shows it)."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.deploy
    )
    env = await service.environment_named(session=session, project_id=project.id, name=environment)
    if env is None:
        raise NotFound(f"this project has no environment {environment!r}")
    target = next(
        (
            t
            for t in await service.live(session=session, project_id=project.id)
            if t.environment.id == env.id
        ),
        None,
    )
    if target is None:
        raise Conflict(
            f"the environment {env.name!r} has no live deployment to run the job in; "
            "deploy it first"
        )
    declared = next((j for j in target.jobs if j["name"] == job), None)
    if declared is None:
        raise NotFound(
            f"the live deployment of {env.name!r} declares no cron job {job!r}; "
            "GET /projects/{id}/cron lists the jobs"
        )
    run_id = await service.claim(
        session=session, target=target, job=declared, scheduled_at=utcnow(), status="queued"
    )
    row = await session.get(CronRun, run_id)
    assert row is not None
    await session.commit()
    return run_read(row, {env.id: env.name})
