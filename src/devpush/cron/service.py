"""Cron runs in the database: which deployment each environment's jobs run in (the one its
alias points at now), claiming a slot once among several schedulers, the history.

Statuses: `queued` (asked for now, not yet started), `running`, `succeeded`, `failed`,
`timed_out`, `skipped` (the previous run of the job was still going)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.cron.models import CronRun
from devpush.db import new_id, utcnow
from devpush.deployments.models import Alias, AliasType, Deployment
from devpush.pagination import encode_cursor, older_than
from devpush.projects import cron as cron_rules
from devpush.projects.models import Environment

FINISHED = ("succeeded", "failed", "timed_out", "skipped")
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Live:
    """An environment and the deployment its alias points at now."""

    environment: Environment
    deployment: Deployment

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return cron_rules.declared(self.deployment.config)


async def live(*, session: AsyncSession, project_id: str | None = None) -> list[Live]:
    """Each environment's live deployment (previews have no environment alias: no jobs)."""
    stmt = (
        select(Environment, Deployment)
        .join(Alias, Alias.environment_id == Environment.id)
        .join(Deployment, Deployment.id == Alias.deployment_id)
        .where(Alias.type == AliasType.environment, Deployment.runtime_handle.is_not(None))
        .order_by(Environment.project_id, Environment.name)
    )
    if project_id is not None:
        stmt = stmt.where(Environment.project_id == project_id)
    return [Live(env, dep) for env, dep in (await session.execute(stmt)).all()]


async def claim(
    *,
    session: AsyncSession,
    target: Live,
    job: dict[str, Any],
    scheduled_at: datetime,
    status: str = "running",
    now: datetime | None = None,
) -> str | None:
    """Insert the slot's row; its id when this insert won, None when another scheduler
    (or this one, earlier) holds it already. `now` is the scheduler's clock (the tick's)."""
    row_id = new_id()
    now = now or utcnow()
    stmt = (
        insert(CronRun)
        .values(
            id=row_id,
            project_id=target.environment.project_id,
            environment_id=target.environment.id,
            deployment_id=target.deployment.id,
            job=job["name"],
            command=job["command"],
            scheduled_at=scheduled_at,
            status=status,
            started_at=now if status == "running" else None,
            created_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=["project_id", "environment_id", "job", "scheduled_at"]
        )
        .returning(CronRun.id)
    )
    won: str | None = await session.scalar(stmt)
    return won


async def still_running(
    *, session: AsyncSession, environment_id: str, job: str, other_than: str
) -> CronRun | None:
    """The job's earlier run in this environment that has not finished, if any."""
    return await session.scalar(
        select(CronRun)
        .where(
            CronRun.environment_id == environment_id,
            CronRun.job == job,
            CronRun.status == "running",
            CronRun.id != other_than,
        )
        .limit(1)
    )


async def take_queued(*, session: AsyncSession) -> list[CronRun]:
    """Runs asked for now, locked so that one scheduler takes each."""
    rows = await session.scalars(
        select(CronRun)
        .where(CronRun.status == "queued")
        .order_by(CronRun.created_at)
        .limit(20)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def runs(
    *,
    session: AsyncSession,
    project_id: str,
    job: str | None = None,
    environment_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[CronRun], str | None]:
    """The project's runs, newest first, with the cursor of the next page."""
    stmt = select(CronRun).where(CronRun.project_id == project_id)
    if job is not None:
        stmt = stmt.where(CronRun.job == job)
    if environment_id is not None:
        stmt = stmt.where(CronRun.environment_id == environment_id)
    if cursor:
        stmt = stmt.where(older_than(cursor, CronRun.created_at, CronRun.id))
    stmt = stmt.order_by(CronRun.created_at.desc(), CronRun.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return rows, next_cursor


async def last_runs(*, session: AsyncSession, project_id: str) -> dict[tuple[str, str], CronRun]:
    """The latest run of each (environment id, job) of the project."""
    rank = (
        func.row_number()
        .over(
            partition_by=(CronRun.environment_id, CronRun.job),
            order_by=(CronRun.created_at.desc(), CronRun.id.desc()),
        )
        .label("rank")
    )
    latest = select(CronRun.id, rank).where(CronRun.project_id == project_id).subquery()
    stmt = select(CronRun).join(latest, latest.c.id == CronRun.id).where(latest.c.rank == 1)
    return {(r.environment_id, r.job): r for r in await session.scalars(stmt)}


async def environment_named(
    *, session: AsyncSession, project_id: str, name: str
) -> Environment | None:
    return await session.scalar(
        select(Environment).where(
            Environment.project_id == project_id,
            (Environment.name == name) | (Environment.slug == name) | (Environment.id == name),
        )
    )


async def stale(*, session: AsyncSession, now: datetime, grace: float = 120) -> list[CronRun]:
    """Runs still `running` well after their timeout: the scheduler running them stopped
    (a monitor killed mid-run). A run never recorded as finished would skip its job forever."""
    rows = list(
        await session.scalars(
            select(CronRun).where(CronRun.status == "running").with_for_update(skip_locked=True)
        )
    )
    found = []
    for row in rows:
        deployment = await session.get(Deployment, row.deployment_id) if row.deployment_id else None
        jobs = cron_rules.declared(deployment.config) if deployment else []
        timeout = next((j["timeout"] for j in jobs if j["name"] == row.job), 0)
        started = row.started_at or row.created_at
        if (now - started).total_seconds() > timeout + grace:
            found.append(row)
    return found


async def prune(*, session: AsyncSession, before: datetime) -> int:
    """Deletes finished runs created before `before`; how many went."""
    result = await session.execute(
        delete(CronRun).where(CronRun.created_at < before, CronRun.status.in_(FINISHED))
    )
    return int(getattr(result, "rowcount", 0) or 0)
