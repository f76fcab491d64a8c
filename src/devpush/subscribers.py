"""Every subscriber of the domain events, in one place (devpush.outbox delivers to them).

A subscriber is a plain async function of the platform and one event; it must be idempotent
(an event is delivered at least once) and should be quick: slow work goes to a job."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from devpush.outbox.dispatch import Dispatcher, Subscriber
from devpush.outbox.names import DEPLOYMENT_EVENTS, PUBLIC_EVENTS, STATUS
from devpush.platform import Platform

log = logging.getLogger("devpush.outbox")


def subscribers(p: Platform) -> list[Subscriber]:
    from devpush.audit.subscriber import record_event
    from devpush.deployments import live
    from devpush.github import subscriber as github
    from devpush.notifications.subscriber import notify

    return [
        Subscriber(
            "live-views",
            functools.partial(live.publish, p),
            frozenset((*DEPLOYMENT_EVENTS, STATUS)),
        ),
        Subscriber("github", functools.partial(github.report, p), frozenset(github.REPORTED)),
        Subscriber("audit", functools.partial(record_event, p), frozenset(PUBLIC_EVENTS)),
        Subscriber("notifications", functools.partial(notify, p), frozenset(PUBLIC_EVENTS)),
    ]


def dispatcher(p: Platform) -> Dispatcher:
    return Dispatcher(p.sessions, subscribers(p))


@contextlib.asynccontextmanager
async def delivering_events(p: Platform) -> AsyncIterator[None]:
    """Deliver the domain events in the background of a worker or monitor, while inside."""
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher(p).run(listen_dsn(p), stop=stop), name="devpush-events")
    try:
        yield
    finally:
        stop.set()
        while not task.done():  # a cancellation can be lost in a wait_for: ask again
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("event delivery ended with an error", extra={"error": str(error)[:300]})


def listen_dsn(p: Platform) -> str:
    """The platform's database as a plain libpq URL, for the NOTIFY listener."""
    url = p.engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
