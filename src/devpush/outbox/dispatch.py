"""Deliver events to subscribers: at least once each, in commit order, one cursor each.

Several dispatchers (every worker and monitor runs one) share the work: a subscriber is taken
by one dispatcher at a time, under a transaction-level advisory lock (another dispatcher skips
it and takes the next). An advisory lock gives the transaction no id, so a subscriber that
takes its time does not hold back the events the others may read (only events below the oldest
running transaction id are read). Within a dispatcher the subscribers are served side by side.
They wake on PostgreSQL's NOTIFY at each commit that wrote an event, and poll anyway. A
subscriber that raises (or takes longer than `timeout`) keeps its position, records the error
and is retried after a backoff that doubles up to `max_backoff`; the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devpush.db import session_scope, utcnow
from devpush.outbox.emit import CHANNEL
from devpush.outbox.models import SNAPSHOT_XMIN, DomainEvent, SubscriberCursor

log = logging.getLogger("devpush.outbox")
Handler = Callable[[DomainEvent], Awaitable[None]]
Sessions = async_sessionmaker[AsyncSession]
LOCK_SPACE = 0x6576  # the advisory locks' first key: a subscriber's delivery (its name the second)


@dataclass(frozen=True)
class Subscriber:
    name: str
    handler: Handler
    types: frozenset[str] | None = None  # None: every event

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


class Dispatcher:
    def __init__(
        self,
        sessions: Sessions,
        subscribers: Sequence[Subscriber],
        *,
        batch: int = 100,
        timeout: float = 30.0,
        max_backoff: float = 300.0,
    ) -> None:
        self.sessions = sessions
        self.subscribers = list(subscribers)
        self.batch = batch
        self.timeout = timeout
        self.max_backoff = max_backoff
        self._ready = False

    async def ensure_cursors(self) -> None:
        """A subscriber seen for the first time starts after the newest event: it is not sent
        the whole history."""
        async with session_scope(self.sessions) as session:
            last = (
                await session.execute(
                    select(DomainEvent.txid, DomainEvent.id)
                    .order_by(DomainEvent.txid.desc(), DomainEvent.id.desc())
                    .limit(1)
                )
            ).first()
            for sub in self.subscribers:
                await session.execute(
                    insert(SubscriberCursor)
                    .values(
                        name=sub.name,
                        txid=last.txid if last else 0,
                        event_id=last.id if last else 0,
                        delivered=0,
                        failures=0,
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                )
        self._ready = True

    async def deliver(self) -> int:
        """One round: each subscriber gets up to `batch` events. Returns how many were
        handled (0: nothing new, or every subscriber waits out a backoff or is busy)."""
        if not self._ready:
            await self.ensure_cursors()
        counts = await asyncio.gather(
            *(self._deliver(sub) for sub in self.subscribers), return_exceptions=True
        )
        for count in counts:
            if isinstance(count, BaseException):
                raise count
        return sum(cast(list[int], counts))

    async def _deliver(self, sub: Subscriber) -> int:
        async with session_scope(self.sessions) as session:
            # Every transaction below it has ended, so nothing can appear below it later.
            xmin = await session.scalar(select(SNAPSHOT_XMIN))
            # Not a row lock: that would give this transaction an id while the handler runs,
            # and every dispatcher would then read nothing newer until it ended.
            taken = await session.scalar(
                select(func.pg_try_advisory_xact_lock(LOCK_SPACE, func.hashtext(sub.name)))
            )
            if not taken:
                return 0
            cursor = await session.scalar(
                select(SubscriberCursor).where(SubscriberCursor.name == sub.name)
            )
            now = utcnow()
            if cursor is None or (cursor.retry_at is not None and cursor.retry_at > now):
                return 0
            events = await session.scalars(
                select(DomainEvent)
                .where(
                    tuple_(DomainEvent.txid, DomainEvent.id) > tuple_(cursor.txid, cursor.event_id),
                    DomainEvent.txid < xmin,
                )
                .order_by(DomainEvent.txid, DomainEvent.id)
                .limit(self.batch)
            )
            handled = 0
            for event in events:
                if sub.wants(event.type):
                    try:
                        await asyncio.wait_for(sub.handler(event), self.timeout)
                    except Exception as exc:  # noqa: BLE001 - any failure is the subscriber's
                        self._failed(cursor, event, exc)
                        return handled
                    handled += 1
                    cursor.delivered += 1
                cursor.txid, cursor.event_id = event.txid, event.id
                cursor.failures, cursor.retry_at = 0, None
            return handled

    def _failed(self, cursor: SubscriberCursor, event: DomainEvent, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, TimeoutError):
            message = f"took longer than {self.timeout:.0f}s"
        cursor.failures += 1
        backoff = min(2.0 ** (cursor.failures - 1), self.max_backoff)
        cursor.last_error = f"event {event.id} ({event.type}): {message}"[:2000]
        cursor.failed_at = utcnow()
        cursor.retry_at = cursor.failed_at + timedelta(seconds=backoff)
        log.warning(
            "event subscriber failed; it retries after a backoff",
            extra={
                "subscriber": cursor.name,
                "event_id": event.id,
                "event": event.type,
                "failures": cursor.failures,
                "retry_in_s": backoff,
                "error": message[:500],
            },
        )

    async def run(self, dsn: str, *, poll: float = 2.0, stop: asyncio.Event | None = None) -> None:
        """Deliver until cancelled or `stop` is set: at each NOTIFY, every `poll` seconds
        anyway, and again at once while batches come back full. Database outages are waited
        out. (`stop` too, because Python 3.11's wait_for can swallow a cancellation.)"""
        wake = asyncio.Event()
        stop = stop or asyncio.Event()
        listener = None
        while not stop.is_set():
            try:
                if listener is None or listener.is_closed():
                    listener = await _listen(dsn, wake)
                handled = await self.deliver()
                if handled:
                    continue
                # A commit can be visible before the oldest transaction ends: try again soon.
                for pause in (0.02, 0.1, 0.3):
                    if wake.is_set():
                        break
                    await asyncio.sleep(pause)
                    if await self.deliver():
                        break
                try:
                    await asyncio.wait_for(wake.wait(), poll)
                except TimeoutError:
                    pass
                wake.clear()
            except asyncio.CancelledError:
                if listener is not None:
                    await listener.close(timeout=2)
                raise
            except Exception as exc:  # noqa: BLE001 - PostgreSQL down: wait, then again
                log.warning("event delivery paused", extra={"error": str(exc)[:300]})
                if listener is not None:
                    listener.terminate()
                    listener = None
                await asyncio.sleep(2.0)
        if listener is not None:
            await listener.close(timeout=2)


async def _listen(dsn: str, wake: asyncio.Event) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    await conn.add_listener(CHANNEL, lambda *_: wake.set())
    wake.set()  # whatever was committed while nobody listened
    return conn


async def cursors(session: AsyncSession) -> list[SubscriberCursor]:
    return list(await session.scalars(select(SubscriberCursor).order_by(SubscriberCursor.name)))


async def prune(sessions: Sessions, older_than: timedelta) -> int:
    """Delete events every subscriber has passed and that are older than `older_than`."""
    async with session_scope(sessions) as session:
        lowest = (
            await session.execute(
                select(SubscriberCursor.txid, SubscriberCursor.event_id)
                .order_by(SubscriberCursor.txid, SubscriberCursor.event_id)
                .limit(1)
            )
        ).first()
        if lowest is None:
            return 0
        result = await session.execute(
            delete(DomainEvent).where(
                tuple_(DomainEvent.txid, DomainEvent.id) <= tuple_(lowest.txid, lowest.event_id),
                DomainEvent.created_at < utcnow() - older_than,
            )
        )
        return int(cast(CursorResult[Any], result).rowcount or 0)


async def pending(session: AsyncSession, name: str) -> int:
    """Events after the subscriber's cursor (its lag)."""
    cursor = await session.get(SubscriberCursor, name)
    if cursor is None:
        return 0
    count = await session.scalar(
        select(func.count())
        .select_from(DomainEvent)
        .where(tuple_(DomainEvent.txid, DomainEvent.id) > tuple_(cursor.txid, cursor.event_id))
    )
    return int(count or 0)
