"""Log retention, run hourly by the worker: log_lines is split into daily partitions (UTC),
made a few days ahead so that lines never land in the DEFAULT partition; a day is dropped
whole once it is older than every project's retention. A project that keeps its lines for
less time than that has its older lines deleted row by row.

Lines that did land in DEFAULT (no partition existed yet for their day) are moved into their
day's new partition, because PostgreSQL refuses to create a partition whose range has rows in
DEFAULT. Every step runs under an advisory lock and a lock timeout, so two workers never race
and a busy table makes the job retry later instead of blocking inserts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from devpush.db import utcnow

log = logging.getLogger("devpush.retention")
DAYS_AHEAD = 2
PREFIX = "log_lines_p"
_NAME = re.compile(rf"^{PREFIX}(\d{{8}})$")
_LOCK = 0x6C6F6773  # "logs": one retention run at a time across workers
_LOCK_TIMEOUT = "5s"


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved: int = 0  # lines moved out of DEFAULT
    deleted: int = 0  # lines deleted row by row (shorter project retention, DEFAULT)


def partition_name(day: date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


async def run(engine: AsyncEngine, *, default_days: int, now: datetime | None = None) -> Report:
    """Drop and delete what is past retention, then make sure partitions exist from yesterday
    to DAYS_AHEAD days ahead (and for any day stranded in DEFAULT). Idempotent."""
    now = now or utcnow()
    report = Report()
    async with engine.connect() as conn:
        retention = await _retentions(conn, default_days)
        horizon = now - timedelta(days=max(retention.values(), default=default_days))
        for name, day in sorted((await partitions(conn)).items(), key=lambda kv: kv[1]):
            if day_start(day + timedelta(days=1)) <= horizon:
                async with _step(conn):
                    await conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
                report.dropped.append(name)
        async with _step(conn):
            result = await conn.execute(
                text("DELETE FROM log_lines_default WHERE ts < :cut"), {"cut": horizon}
            )
            report.deleted += result.rowcount
        report.deleted += await _delete_shorter(conn, retention, default_days, now, horizon)
        wanted = {now.date() + timedelta(days=d) for d in range(-1, DAYS_AHEAD + 1)}
        async with _step(conn):
            stranded = await conn.execute(
                text(
                    "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM log_lines_default "
                    "WHERE ts >= :since"
                ),
                {"since": horizon},
            )
            wanted |= {row[0] for row in stranded}
        existing = set((await partitions(conn)).values())
        for day in sorted(wanted - existing):
            moved = await create_partition(conn, day)
            if moved is not None:
                report.moved += moved
                report.created.append(partition_name(day))
    if report.created or report.dropped or report.deleted:
        log.info(
            "log retention",
            extra={
                "partitions_created": report.created,
                "dropped": report.dropped,
                "moved": report.moved,
                "deleted": report.deleted,
            },
        )
    return report


async def partitions(conn: AsyncConnection) -> dict[str, date]:
    """The daily partitions of log_lines, by name."""
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'log_lines'::regclass"
        )
    )
    found: dict[str, date] = {}
    for row in rows:
        name = str(row[0])
        match = _NAME.match(name)
        if match:
            found[name] = datetime.strptime(match.group(1), "%Y%m%d").date()
    await conn.rollback()
    return found


async def create_partition(conn: AsyncConnection, day: date) -> int | None:
    """Create the partition of `day`, moving its lines out of DEFAULT; returns how many lines
    were moved (None when it existed). Writes to log_lines wait meanwhile: no line slips into
    DEFAULT, and none is routed there just before the partition is attached."""
    name = partition_name(day)
    start, end = day_start(day), day_start(day + timedelta(days=1))
    async with _step(conn):
        exists = await conn.scalar(text("SELECT to_regclass(:name)"), {"name": name})
        if exists is not None:
            return None
        # Writers first: a COPY that had already routed a line of this day to DEFAULT would
        # fail DEFAULT's new constraint once the partition is attached. Held on the parent,
        # writers wait here and then route with the new partition; readers are not blocked.
        await conn.execute(text("LOCK TABLE ONLY log_lines IN SHARE MODE"))
        await conn.execute(text("LOCK TABLE log_lines_default IN ACCESS EXCLUSIVE MODE"))
        await conn.execute(
            text(f'CREATE TABLE "{name}" (LIKE log_lines INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
        )
        moved = await conn.execute(
            text(
                f"WITH moved AS (DELETE FROM log_lines_default WHERE ts >= :start AND ts < :end "
                f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved'
            ),
            {"start": start, "end": end},
        )
        bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        await conn.execute(
            text(f'ALTER TABLE log_lines ATTACH PARTITION "{name}" FOR VALUES {bounds}')
        )
        return int(moved.rowcount)


async def _retentions(conn: AsyncConnection, default_days: int) -> dict[str, int]:
    """Each project's retention in days (its own, else the default)."""
    rows = await conn.execute(text("SELECT id, log_retention_days FROM projects"))
    retention = {str(row[0]): int(row[1] or default_days) for row in rows}
    await conn.rollback()
    return retention


async def _delete_shorter(
    conn: AsyncConnection,
    retention: dict[str, int],
    default_days: int,
    now: datetime,
    horizon: datetime,
) -> int:
    """Delete, project by project through the (project_id, ts) index, the lines of projects
    kept for less time than the horizon (lines of deleted projects follow the default)."""
    deleted = 0
    for project_id in await _projects_with_lines(conn):
        cut = now - timedelta(days=retention.get(project_id, default_days))
        if cut <= horizon:
            continue
        async with _step(conn):
            result = await conn.execute(
                text("DELETE FROM log_lines WHERE project_id = :p AND ts < :cut"),
                {"p": project_id, "cut": cut},
            )
        deleted += int(result.rowcount)
    return deleted


async def _projects_with_lines(conn: AsyncConnection) -> list[str]:
    """Distinct project ids in log_lines, read by skipping through the (project_id, ts)
    index (one probe per project and partition, not a scan of the lines)."""
    rows = await conn.execute(
        text(
            """
            WITH RECURSIVE ids(project_id) AS (
              (SELECT project_id FROM log_lines ORDER BY project_id LIMIT 1)
              UNION ALL
              SELECT (SELECT l.project_id FROM log_lines l WHERE l.project_id > ids.project_id
                      ORDER BY l.project_id LIMIT 1)
              FROM ids WHERE ids.project_id IS NOT NULL
            )
            SELECT project_id FROM ids WHERE project_id IS NOT NULL
            """
        )
    )
    found = [row[0] for row in rows]
    await conn.rollback()
    return found


class _step:
    """One short transaction holding the retention lock, with a lock timeout."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def __aenter__(self) -> AsyncConnection:
        if self.conn.in_transaction():
            await self.conn.rollback()
        await self.conn.begin()
        await self.conn.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
        await self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        return self.conn

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.conn.commit()
        else:
            await self.conn.rollback()
