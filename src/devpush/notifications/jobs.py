"""The notification jobs: send one attempt of a delivery (it enqueues its own retry), and
trim the delivery log. Attempts whose job or worker was lost are the monitor's (sweep.py)."""

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
        await service.prune_log(session=session)


def functions(settings: Settings) -> list[Function]:
    # One try per job: a failed attempt is recorded, and the next one is its own deferred job;
    # one lost with its worker is counted by the sweep, which enqueues the next (sweep.py).
    return [
        func(
            deliver_notification,
            timeout=delivery.ATTEMPT_TIMEOUT,
            keep_result=0,
            max_tries=1,
        )
    ]
