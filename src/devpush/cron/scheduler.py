"""The cron scheduler, run by every monitor (`start`, from Monitor.run): every few seconds it
takes each environment's live deployment and, for each job it declares, the job's latest slot.

Of several monitors, only the one whose insert of the slot's row wins fires it (the row is
unique per project, environment, job and slot). A job never overlaps itself: a slot whose
previous run is still going is recorded `skipped`, with a line in the logs. Runs asked for
through the API (`queued`) are taken the same way, each by one scheduler (SKIP LOCKED).
Each run is a task of this scheduler, so the monitor's own loop is never held up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.cron import runner, service
from devpush.cron.models import CronRun
from devpush.db import session_scope, utcnow
from devpush.platform import Platform
from devpush.projects import cron as cron_rules

log = logging.getLogger("devpush.cron")
TICK = 5.0  # seconds between looks at the schedules
GRACE = 300.0  # a slot missed by at most this much (a monitor restarting) still fires
_LOOPS: set[asyncio.Task[None]] = set()
KEEP_RUNS = timedelta(days=30)  # finished runs older than this are deleted, hourly


class Scheduler:
    def __init__(self, p: Platform, *, grace: float = GRACE) -> None:
        self.p = p
        self.grace = grace
        self.running: dict[str, asyncio.Task[None]] = {}

    async def tick(self, now: datetime | None = None) -> list[str]:
        """One look: fires the slots due and the runs asked for; the ids of the runs started
        here (their tasks are in `running`)."""
        now = now or utcnow()
        await self._expire(now)
        async with session_scope(self.p.sessions) as session:
            targets = await service.live(session=session)
        started = []
        for target in targets:
            since = target.deployment.ready_at or target.deployment.created_at
            for job in target.jobs:
                slot = cron_rules.last_slot(job["schedule"], now)
                if (now - slot).total_seconds() > self.grace or slot < since.replace(
                    second=0, microsecond=0
                ):
                    continue
                run_id = await self._fire(target, job, slot, now)
                if run_id is not None:
                    started.append(run_id)
        return started + await self._take_queued()

    async def _fire(
        self, target: service.Live, job: dict[str, object], slot: datetime, now: datetime
    ) -> str | None:
        async with session_scope(self.p.sessions) as session:
            run_id = await service.claim(
                session=session, target=target, job=job, scheduled_at=slot, now=now
            )
            if run_id is None:
                return None  # another scheduler holds the slot
            row = await session.get(CronRun, run_id)
            assert row is not None
            skipped = await self._skip_if_running(session, row)
        if skipped:
            return None
        self._spawn(run_id)
        return run_id

    async def _take_queued(self) -> list[str]:
        started, skipped = [], []
        async with session_scope(self.p.sessions) as session:
            for row in await service.take_queued(session=session):
                if await self._skip_if_running(session, row):
                    skipped.append(row.id)
                    continue
                row.status, row.started_at = "running", utcnow()
                started.append(row.id)
        for run_id in started:
            self._spawn(run_id)
        return started

    async def _skip_if_running(self, session: AsyncSession, row: CronRun) -> bool:
        """Records the row `skipped` (and says so in the logs) when the job's previous run in
        the environment is still going."""
        previous = await service.still_running(
            session=session,
            environment_id=row.environment_id,
            job=row.job,
            other_than=row.id,
        )
        if previous is None:
            return False
        row.status, row.finished_at = "skipped", utcnow()
        row.error = (
            f"skipped: the previous run #{previous.id[:8]} (started "
            f"{previous.started_at or previous.created_at:%H:%M:%S} UTC) is still running"
        )
        log.info(
            "cron slot skipped",
            extra={"run_id": row.id, "job": row.job, "previous_run_id": previous.id},
        )
        if row.deployment_id:
            message = "Skipped: " + row.error.removeprefix("skipped: ")
            self._background(runner.log_line(self.p, row.deployment_id, row.job, row.id, message))
        return True

    async def _expire(self, now: datetime) -> None:
        """Runs whose scheduler stopped mid-run are recorded failed, so their job runs again."""
        async with session_scope(self.p.sessions) as session:
            for row in await service.stale(session=session, now=now):
                if row.id in self.running:
                    continue
                row.status, row.finished_at = "failed", now
                row.error = "interrupted: the monitor running it stopped before it finished"
                log.warning("cron run interrupted", extra={"run_id": row.id, "job": row.job})

    def _spawn(self, run_id: str) -> None:
        task = asyncio.create_task(runner.execute(self.p, run_id), name=f"cron-{run_id}")
        self.running[run_id] = task
        task.add_done_callback(lambda t: self._done(run_id, t))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.running[f"log-{id(task)}"] = task
        task.add_done_callback(lambda t: self._done(f"log-{id(task)}", t))

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        self.running.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "cron task crashed",
                exc_info=task.exception(),
                extra={"run_id": key},
            )

    async def close(self) -> None:
        """Stops the runs in progress (each records itself failed) and waits for them."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def prune(self) -> None:
        async with session_scope(self.p.sessions) as session:
            gone = await service.prune(session=session, before=utcnow() - KEEP_RUNS)
        if gone:
            log.info("cron runs pruned", extra={"count": gone})

    async def loop(self, stop: asyncio.Event, tick: float = TICK) -> None:
        pruned = 0.0
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                    if asyncio.get_running_loop().time() - pruned > 3600:
                        await self.prune()
                        pruned = asyncio.get_running_loop().time()
                except Exception:  # the database or Redis restarting: look again next tick
                    log.exception("cron tick failed; retrying")
                try:
                    await asyncio.wait_for(stop.wait(), tick)
                except TimeoutError:
                    pass
        finally:
            await self.close()


def start(p: Platform, stop: asyncio.Event) -> asyncio.Task[None]:
    """The scheduler's loop as a task of the monitor, until `stop` is set (the task is held
    here: the event loop keeps only a weak reference to it)."""
    task = asyncio.create_task(Scheduler(p).loop(stop), name="devpush-cron")
    _LOOPS.add(task)
    task.add_done_callback(_LOOPS.discard)
    return task
