"""The notifications' subscriber: a delivery row per channel the event reaches (quick, and
idempotent: a redelivered event adds none), and a job per delivery to send it. The network
work happens in the job, so a receiver that is down holds back neither the events nor the other
channels."""

from __future__ import annotations

from devpush.db import session_scope
from devpush.notifications import service
from devpush.outbox.models import DomainEvent
from devpush.platform import Platform


async def notify(p: Platform, event: DomainEvent) -> None:
    if event.team_id is None:
        return
    async with session_scope(p.sessions) as session:
        pending = await service.record_deliveries(session=session, event=event)
    if not pending:
        return
    from devpush.queue import enqueue_notification

    for delivery_id in pending:
        await enqueue_notification(p.redis, delivery_id, 0)
