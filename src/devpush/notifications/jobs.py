"""The notification jobs: send one attempt of a delivery (it enqueues its own retry), and a
sweep that enqueues again the attempts whose job was lost and trims the delivery log."""

from __future__ import annotations

from typing import Any

from arq import func
from arq.worker import Function

from devpush.db import session_scope
from devpush.notifications import delivery, service
from devpush.platform import Platform
from devpush.settings import Settings


async def deliver_notification(ctx: dict[str, Any], delivery_id: str, number: int) -> None:
    p: Platform = ctx["platform"]
    await delivery.attempt(p, delivery_id, number)


async def sweep_notifications(ctx: dict[str, Any]) -> None:
    p: Platform = ctx["platform"]
    async with session_scope(p.sessions) as session:
        overdue = await service.overdue_deliveries(session=session)
        await service.prune_log(session=session)
    from devpush.queue import enqueue_notification

    for delivery_id, number in overdue:  # a job still queued under that id is kept as it is
        await enqueue_notification(p.redis, delivery_id, number)


def functions(settings: Settings) -> list[Function]:
    # One try per job: a failed attempt is recorded, and the next one is its own deferred job.
    return [func(deliver_notification, timeout=60, keep_result=0, max_tries=1)]
