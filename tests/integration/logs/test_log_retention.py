"""Retention: daily partitions made ahead, lines stranded in DEFAULT moved out, days past
every project's retention dropped whole, shorter per-project retention deleted row by row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text, update

from devpush.db import session_scope, utcnow
from devpush.logs import retention
from devpush.logs.models import LogLine
from devpush.platform import Platform
from devpush.projects.models import Project
from tests.integration.logs.helpers import MakeDeployment, ProjectRefs, append


@pytest.fixture
async def clean_partitions(platform: Platform) -> AsyncIterator[None]:
    """Each test starts and ends with no daily partition (everything in DEFAULT)."""

    async def drop_all() -> None:
        async with platform.engine.connect() as conn:
            for name in await retention.partitions(conn):
                await conn.execute(text(f'DROP TABLE "{name}"'))
            await conn.commit()

    await drop_all()
    yield
    await drop_all()


async def partition_days(platform: Platform) -> list[date]:
    async with platform.engine.connect() as conn:
        return sorted((await retention.partitions(conn)).values())


async def count(platform: Platform, table: str = "log_lines", project_id: str | None = None) -> int:
    where = " WHERE project_id = :p" if project_id else ""
    async with platform.engine.connect() as conn:
        value = await conn.scalar(text(f"SELECT count(*) FROM {table}{where}"), {"p": project_id})
    return int(value or 0)


async def test_partitions_are_made_ahead_and_default_is_emptied(
    platform: Platform, clean_partitions: None, make_deployment: MakeDeployment
) -> None:
    now = utcnow()
    deployment_id = await make_deployment()
    # no partitions yet: these land in DEFAULT, including one from four days ago
    await append(platform, deployment_id, ["today 1", "today 2"], ts=now)
    await append(platform, deployment_id, ["old"], ts=now - timedelta(days=4))
    assert await count(platform, "log_lines_default") == 3
    report = await retention.run(platform.engine, default_days=30, now=now)
    today = now.date()
    expected = [today - timedelta(days=4)] + [today + timedelta(days=d) for d in range(-1, 3)]
    assert await partition_days(platform) == expected
    assert report.moved == 3
    assert await count(platform, "log_lines_default") == 0
    assert await count(platform) == 3
    # new lines go to their day's partition; a second run changes nothing
    await append(platform, deployment_id, ["tomorrow"], ts=now + timedelta(days=1))
    assert await count(platform, retention.partition_name(today + timedelta(days=1))) == 1
    again = await retention.run(platform.engine, default_days=30, now=now)
    assert (again.created, again.dropped, again.moved, again.deleted) == ([], [], 0, 0)
    # search still sees every line, now spread over partitions
    async with session_scope(platform.sessions) as session:
        seqs = list(
            await session.scalars(
                select(LogLine.seq)
                .where(LogLine.deployment_id == deployment_id)
                .order_by(LogLine.seq)
            )
        )
    assert seqs == [1, 2, 3, 4]


async def test_days_older_than_retention_are_dropped_whole(
    platform: Platform, clean_partitions: None, make_deployment: MakeDeployment
) -> None:
    now = utcnow()
    deployment_id = await make_deployment()
    for age in (40, 31, 29, 1, 0):
        await append(platform, deployment_id, [f"{age} days old"], ts=now - timedelta(days=age))
    await retention.run(platform.engine, default_days=60, now=now)  # partitions for each day
    assert len(await partition_days(platform)) == 3 + 4  # 40, 31, 29 + yesterday..today+2
    report = await retention.run(platform.engine, default_days=30, now=now)
    assert sorted(report.dropped) == [
        retention.partition_name((now - timedelta(days=age)).date()) for age in (40, 31)
    ]
    assert report.deleted == 0  # whole days went; no row-by-row delete was needed
    async with session_scope(platform.sessions) as session:
        kept = list(await session.scalars(select(LogLine.message).order_by(LogLine.ts)))
    assert kept == ["29 days old", "1 days old", "0 days old"]


async def test_a_project_keeping_lines_longer_holds_back_the_drop(
    platform: Platform, clean_partitions: None, make_deployment: MakeDeployment
) -> None:
    now = utcnow()
    deployment_id = await make_deployment()
    await append(platform, deployment_id, ["40 days old"], ts=now - timedelta(days=40))
    async with session_scope(platform.sessions) as session:
        await session.execute(update(Project).values(log_retention_days=90))
    report = await retention.run(platform.engine, default_days=30, now=now)
    assert report.dropped == [] and report.deleted == 0
    assert await count(platform) == 1


async def test_shorter_project_retention_deletes_only_that_projects_old_lines(
    platform: Platform,
    clean_partitions: None,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
) -> None:
    from devpush.projects import service as projects
    from devpush.projects.schemas import ProjectCreate

    now = utcnow()
    async with session_scope(platform.sessions) as session:
        other = await projects.create_project(
            session=session, team_id=project.team_id, body=ProjectCreate(name="keeps-longer")
        )
        await session.execute(
            update(Project).where(Project.id == project.id).values(log_retention_days=3)
        )
    short = await make_deployment()
    default = await make_deployment(project_id=other.id)
    for deployment_id in (short, default):
        for age in (10, 5, 2, 0):
            await append(platform, deployment_id, [f"{age}d"], ts=now - timedelta(days=age))
    report = await retention.run(platform.engine, default_days=30, now=now)
    assert report.deleted == 2 and report.dropped == []
    assert await count(platform, project_id=project.id) == 2
    assert await count(platform, project_id=other.id) == 4
    async with session_scope(platform.sessions) as session:
        left = list(
            await session.scalars(
                select(LogLine.message).where(LogLine.project_id == project.id).order_by(LogLine.ts)
            )
        )
        total = await session.scalar(select(func.count()).select_from(LogLine))
    assert left == ["2d", "0d"] and total == 6


async def test_lines_written_while_their_days_partition_is_made_are_not_lost(
    platform: Platform, clean_partitions: None, make_deployment: MakeDeployment
) -> None:
    """A line stored while retention attaches the partition of its own day (a fresh install's
    first run) waits for the partition and lands in it, instead of failing DEFAULT's new
    constraint (CI once lost a deployment's failure message this way)."""
    now = utcnow()
    deployment_id = await make_deployment()
    async with platform.engine.connect() as reader:
        # a reader holding DEFAULT keeps retention waiting mid-way, after it has begun
        await reader.execute(text("SELECT 1 FROM log_lines_default LIMIT 1"))
        create = asyncio.create_task(make_partition(platform, now.date()))
        await wait_for_lock_waiters(platform, 1)
        store = asyncio.create_task(append(platform, deployment_id, ["during"], ts=now))
        await wait_for_lock_waiters(platform, 2)
        await reader.rollback()
    assert await create == 0
    stored = await store
    assert [line.message for line in stored] == ["during"]
    assert await count(platform, retention.partition_name(now.date())) == 1
    assert await count(platform, "log_lines_default") == 0


async def make_partition(platform: Platform, day: date) -> int | None:
    async with platform.engine.connect() as conn:
        return await retention.create_partition(conn, day)


async def wait_for_lock_waiters(platform: Platform, n: int) -> None:
    """Until n sessions of this database wait for a lock (each step is bounded by 5 s)."""
    for _ in range(500):
        async with platform.engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} sessions waiting for a lock, saw {waiting}")
