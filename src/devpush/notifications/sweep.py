"""The deliveries' sweep, run by every monitor each NOTIFICATIONS_SWEEP_INTERVAL seconds: an
attempt whose worker stopped mid-way is counted and the next one enqueued, and a delivery whose
job was lost is enqueued again, each under a new job id, so that the mark a dead worker leaves
on its job (arq's, held until the longest job timeout has passed) delays nothing. Any number
of monitors may sweep at once: the rows are taken under their locks, and the job ids of one
finding are the same for every sweep."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from devpush.db import session_scope
from devpush.notifications import service
from devpush.platform import Platform
from devpush.queue import enqueue_notification, enqueue_notification_again

log = logging.getLogger("devpush.notifications")
_LOOPS: set[asyncio.Task[None]] = set()


async def sweep(p: Platform) -> int:
    """One sweep; how many attempts it enqueued."""
    grace = timedelta(seconds=p.settings.notifications_lost_after)
    # Overdue first: an attempt that the second step makes due now is not also found overdue.
    async with session_scope(p.sessions) as session:
        overdue = await service.overdue_deliveries(session=session, grace=grace)
    async with session_scope(p.sessions) as session:
        lost = await service.lost_attempts(session=session, grace=grace)
    for delivery_id, number, due in overdue:
        await enqueue_notification_again(p.redis, delivery_id, number, due=due)
    for delivery_id, number in lost:
        log.warning(
            "a notification attempt was lost with its worker; sending it again",
            extra={"delivery_id": delivery_id, "attempt": number},
        )
        await enqueue_notification(p.redis, delivery_id, number)
    return len(overdue) + len(lost)


async def loop(p: Platform, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await sweep(p)
        except (OSError, RedisError, SQLAlchemyError) as exc:  # restarting: sweep next time
            log.warning("notification sweep incomplete", extra={"error": str(exc)[:300]})
        try:
            await asyncio.wait_for(stop.wait(), p.settings.notifications_sweep_interval)
        except TimeoutError:
            pass


def start(p: Platform, stop: asyncio.Event) -> asyncio.Task[None]:
    """The sweep's loop as a task of the monitor, until `stop` is set (held here: the event
    loop keeps only a weak reference to it)."""
    task = asyncio.create_task(loop(p, stop), name="devpush-notification-sweep")
    _LOOPS.add(task)
    task.add_done_callback(_LOOPS.discard)
    return task
