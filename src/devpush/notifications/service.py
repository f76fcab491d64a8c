"""Notification channels (validated, their URL and secret encrypted) and their deliveries:
which channels an event reaches, the delivery rows, and the outcome of each attempt.

A delivery is `pending` (its next attempt due at `next_attempt_at`), `sending` (an attempt
claimed by one job until `next_attempt_at`), then `succeeded` or `failed`. The claim, taken
under the row's lock, is what keeps an attempt from being made twice by two jobs; a claim that
runs out with no outcome recorded was lost with its worker, and a sweep counts it made and
enqueues the next attempt (`lost_attempts`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal, normalize_email
from devpush.crypto import decrypt, encrypt
from devpush.db import new_id, utcnow
from devpush.errors import Invalid, NotConfigured, NotFound
from devpush.notifications import targets
from devpush.notifications.models import NotificationChannel, NotificationDelivery
from devpush.notifications.schemas import ChannelCreate, ChannelUpdate
from devpush.outbox.models import DomainEvent
from devpush.outbox.names import PUBLIC_EVENTS
from devpush.pagination import encode_cursor, older_than
from devpush.projects.models import Environment, Project
from devpush.settings import Settings
from devpush.teams.access import Action, authorize_team

# Seconds before each retry: a delivery gets len(BACKOFF) + 1 attempts, then it is failed.
BACKOFF: tuple[float, ...] = (10, 30, 120, 600)
FAILING_AFTER = 5  # failed attempts in a row (any deliveries) that make a channel `failing`
LOG_KEPT = timedelta(days=30)  # concluded deliveries older than this leave the log
TEST_EVENT = "test"
PENDING, SENDING = "pending", "sending"


@dataclass(frozen=True)
class Target:
    """Where one delivery goes, decrypted for the moment of sending."""

    kind: str
    url: str | None
    email: str | None
    secret: str | None


# ---- channels ---------------------------------------------------------------------------
async def load_channel(
    *, session: AsyncSession, principal: Principal, channel_id: str, action: Action
) -> NotificationChannel:
    """The channel, if the caller may `action` in its team; another team's is NotFound."""
    channel = await session.get(NotificationChannel, channel_id) if len(channel_id) <= 32 else None
    if channel is None:
        raise NotFound("no such notification channel")
    try:
        await authorize_team(
            session=session, principal=principal, team_id=channel.team_id, action=action
        )
    except NotFound:
        raise NotFound("no such notification channel") from None
    return channel


async def list_channels(*, session: AsyncSession, team_id: str) -> list[NotificationChannel]:
    return list(
        await session.scalars(
            select(NotificationChannel)
            .where(NotificationChannel.team_id == team_id)
            .order_by(NotificationChannel.created_at, NotificationChannel.id)
        )
    )


def check_events(events: list[str]) -> list[str]:
    unknown = [e for e in events if e not in PUBLIC_EVENTS]
    if unknown:
        raise Invalid(f"unknown event {unknown[0]!r}; choose from: {', '.join(PUBLIC_EVENTS)}")
    return list(dict.fromkeys(events))


async def resolve_projects(*, session: AsyncSession, team_id: str, refs: list[str]) -> list[str]:
    """Project ids for ids or names of the team's projects; any other is NotFound (whether it
    exists in another team is never told)."""
    ids: list[str] = []
    for ref in dict.fromkeys(refs):
        project_id = await session.scalar(
            select(Project.id).where(
                Project.team_id == team_id,
                Project.status != "deleting",
                or_(Project.id == ref, Project.slug == ref, Project.name == ref),
            )
        )
        if project_id is None:
            raise NotFound(f"no project {ref!r} in this team")
        ids.append(project_id)
    return ids


async def resolve_environments(
    *, session: AsyncSession, team_id: str, project_ids: list[str], refs: list[str]
) -> list[str]:
    """Environment ids, or slugs (which match that environment in every project in scope)."""
    stmt = select(Environment).join(Project, Project.id == Environment.project_id)
    stmt = stmt.where(Project.team_id == team_id)
    if project_ids:
        stmt = stmt.where(Environment.project_id.in_(project_ids))
    known = list(await session.scalars(stmt))
    chosen: list[str] = []
    for ref in dict.fromkeys(refs):
        by_id = next((e.id for e in known if e.id == ref), None)
        by_name = next(
            (e.slug for e in known if ref.lower() in (e.slug.lower(), e.name.lower())), None
        )
        if by_id is None and by_name is None:
            raise Invalid(f"no environment {ref!r} in the projects this channel covers")
        chosen.append(by_id or by_name or ref)
    return list(dict.fromkeys(chosen))


async def _check_target(
    settings: Settings, kind: str, url: str | None, email: str | None
) -> tuple[str | None, str | None]:
    if kind == "email":
        if url is not None:
            raise Invalid("an email channel takes 'email', not 'url'")
        if not email:
            raise Invalid("an email channel needs 'email': the address to write to")
        if not settings.smtp_url:
            raise NotConfigured(
                "email notifications need a mail server, and this platform has none "
                "(DEVPUSH_SMTP_URL); use a webhook, Slack or Discord channel"
            )
        return None, normalize_email(email)
    if email is not None:
        raise Invalid(f"a {kind} channel takes 'url', not 'email'")
    if not url:
        raise Invalid(f"a {kind} channel needs 'url'")
    await targets.check_url(url, allow_private=settings.notifications_allow_private)
    return url, None


async def create_channel(
    *,
    session: AsyncSession,
    settings: Settings,
    team_id: str,
    body: ChannelCreate,
    created_by: str | None,
) -> tuple[NotificationChannel, str | None]:
    """The new channel and, for a webhook, its signing secret (shown once, then only stored
    encrypted)."""
    events = check_events(body.events)
    project_ids = await resolve_projects(session=session, team_id=team_id, refs=body.projects)
    environments = await resolve_environments(
        session=session, team_id=team_id, project_ids=project_ids, refs=body.environments
    )
    url, email = await _check_target(settings, body.channel, body.url, body.email)
    secret = f"whsec_{secrets.token_urlsafe(32)}" if body.channel == "webhook" else None
    channel = NotificationChannel(
        id=new_id(),
        team_id=team_id,
        kind=body.channel,
        url_enc=encrypt(url) if url else None,
        email=email,
        events=events,
        project_ids=project_ids,
        environments=environments,
        secret_enc=encrypt(secret) if secret else None,
        enabled=body.enabled,
        state="ok",
        consecutive_failures=0,
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(channel)
    await session.flush()
    return channel, secret


async def update_channel(
    *, session: AsyncSession, settings: Settings, channel: NotificationChannel, body: ChannelUpdate
) -> list[str]:
    """Apply the fields given; returns their names (for the audit log)."""
    changed = body.model_fields_set
    if "events" in changed:
        channel.events = check_events(body.events or [])
    if "projects" in changed:
        channel.project_ids = await resolve_projects(
            session=session, team_id=channel.team_id, refs=body.projects or []
        )
    if "environments" in changed or "projects" in changed:
        current = body.environments if "environments" in changed else channel.environments
        channel.environments = await resolve_environments(
            session=session,
            team_id=channel.team_id,
            project_ids=channel.project_ids,
            refs=current or [],
        )
    if "url" in changed or "email" in changed:
        url, email = await _check_target(settings, channel.kind, body.url, body.email)
        channel.url_enc, channel.email = (encrypt(url) if url else None), email
    if "enabled" in changed and body.enabled is not None:
        channel.enabled = body.enabled
    await session.flush()
    return sorted(changed)


def target_of(channel: NotificationChannel) -> Target:
    return Target(
        kind=channel.kind,
        url=decrypt(channel.url_enc) if channel.url_enc else None,
        email=channel.email,
        secret=decrypt(channel.secret_enc) if channel.secret_enc else None,
    )


def shown_target(channel: NotificationChannel) -> str:
    if channel.kind == "email":
        return channel.email or ""
    return targets.masked(decrypt(channel.url_enc)) if channel.url_enc else ""


# ---- which channels an event reaches ----------------------------------------------------
async def matching_channels(
    *, session: AsyncSession, event: DomainEvent
) -> list[NotificationChannel]:
    if event.team_id is None:
        return []
    channels = [
        c
        for c in await list_channels(session=session, team_id=event.team_id)
        if c.enabled
        and event.type in c.events
        and (not c.project_ids or event.project_id in c.project_ids)
    ]
    if not any(c.environments for c in channels):
        return channels
    environment_id = event.data.get("environment_id")
    environment = (
        await session.get(Environment, environment_id) if isinstance(environment_id, str) else None
    )
    names = {environment.id, environment.slug} if environment else set()
    return [c for c in channels if not c.environments or names & set(c.environments)]


def snapshot(event: DomainEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "team_id": event.team_id,
        "project_id": event.project_id,
        "deployment_id": event.deployment_id,
        "domain_id": event.domain_id,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }


async def record_deliveries(*, session: AsyncSession, event: DomainEvent) -> list[str]:
    """A delivery per matching channel (none twice: (channel, event) is unique). Returns the
    event's deliveries not yet attempted, the ones made before included, so that an enqueue
    lost to a failure is made again when the event is delivered again."""
    now = utcnow()
    for channel in await matching_channels(session=session, event=event):
        await session.execute(
            insert(NotificationDelivery)
            .values(
                id=new_id(),
                channel_id=channel.id,
                event_id=event.id,
                event_type=event.type,
                event=snapshot(event),
                status="pending",
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
            .on_conflict_do_nothing(index_elements=["channel_id", "event_id"])
        )
    return list(
        await session.scalars(
            select(NotificationDelivery.id).where(
                NotificationDelivery.event_id == event.id,
                NotificationDelivery.status == "pending",
                NotificationDelivery.attempts == 0,
            )
        )
    )


def new_test_delivery(channel: NotificationChannel) -> NotificationDelivery:
    now = utcnow()
    return NotificationDelivery(
        id=new_id(),
        channel_id=channel.id,
        event_id=None,
        event_type=TEST_EVENT,
        event={"type": TEST_EVENT, "team_id": channel.team_id, "created_at": now.isoformat()},
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )


def record_attempt(
    *,
    delivery: NotificationDelivery,
    channel: NotificationChannel,
    error: str | None,
    response_code: int | None,
    retry: bool = True,
) -> float | None:
    """Write an attempt's outcome on the delivery and its channel. Returns the seconds until
    the next attempt, or None when there is none (it succeeded, or it is failed for good).
    A test (`retry=False`) is tried once, and only its success changes the channel's state."""
    now = utcnow()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_code = response_code
    delivery.last_error = error[:2000] if error else None
    if error is None:
        delivery.status, delivery.next_attempt_at = "succeeded", None
        channel.consecutive_failures, channel.state = 0, "ok"
        return None
    if not retry:
        delivery.status, delivery.next_attempt_at = "failed", None
        return None
    channel.consecutive_failures += 1
    if channel.consecutive_failures >= FAILING_AFTER:
        channel.state = "failing"
    if delivery.attempts > len(BACKOFF):
        delivery.status, delivery.next_attempt_at = "failed", None
        channel.state = "failing"
        return None
    wait = BACKOFF[delivery.attempts - 1]
    delivery.status = PENDING
    delivery.next_attempt_at = now + timedelta(seconds=wait)
    return wait


def claim(delivery: NotificationDelivery, *, seconds: float) -> None:
    """The pending attempt is the caller's for `seconds` (its job's timeout, at which arq
    cancels the job): a claim still held past that lost its worker."""
    delivery.status = SENDING
    delivery.next_attempt_at = utcnow() + timedelta(seconds=seconds)


def lost_error(number: int) -> str:
    return (
        f"attempt {number + 1} was lost: the worker making it stopped before it recorded the "
        "outcome (the receiver may have got it)"
    )


async def overdue_deliveries(
    *, session: AsyncSession, grace: timedelta
) -> list[tuple[str, int, datetime]]:
    """(id, next attempt, when it was due) of pending deliveries overdue by `grace`: no worker
    took their job (Redis lost it), or the worker that took it stopped before claiming."""
    rows = await session.execute(
        select(
            NotificationDelivery.id,
            NotificationDelivery.attempts,
            NotificationDelivery.next_attempt_at,
        ).where(
            NotificationDelivery.status == PENDING,
            NotificationDelivery.next_attempt_at < utcnow() - grace,
        )
    )
    return [(row.id, row.attempts, row.next_attempt_at) for row in rows]


async def lost_attempts(*, session: AsyncSession, grace: timedelta) -> list[tuple[str, int]]:
    """Claims that ran out `grace` ago with no outcome recorded: the worker making the attempt
    stopped (killed, or its job cancelled at the timeout). Each counts as an attempt made (the
    receiver may have got it: the next one carries the same X-Devpush-Delivery) and the next is
    due now; the channel's state is left alone, since its receiver did nothing wrong. A lost
    test is failed (a test is tried once). Returns (id, next attempt) of those to enqueue."""
    now = utcnow()
    rows = await session.scalars(
        select(NotificationDelivery)
        .where(
            NotificationDelivery.status == SENDING,
            NotificationDelivery.next_attempt_at < now - grace,
        )
        .with_for_update(skip_locked=True)  # another sweep counts it, once
    )
    again = []
    for delivery in rows:
        delivery.last_error = lost_error(delivery.attempts)
        delivery.attempts += 1
        if delivery.event_type == TEST_EVENT or delivery.attempts > len(BACKOFF):
            delivery.status, delivery.next_attempt_at = "failed", None
            continue
        delivery.status, delivery.next_attempt_at = PENDING, now
        again.append((delivery.id, delivery.attempts))
    return again


async def prune_log(*, session: AsyncSession, older_than: timedelta = LOG_KEPT) -> None:
    await session.execute(
        delete(NotificationDelivery).where(
            NotificationDelivery.status.not_in((PENDING, SENDING)),
            NotificationDelivery.created_at < utcnow() - older_than,
        )
    )


# ---- the delivery log -------------------------------------------------------------------
async def deliveries_page(
    *, session: AsyncSession, channel_id: str, limit: int, cursor: str | None
) -> tuple[list[NotificationDelivery], str | None]:
    stmt = select(NotificationDelivery).where(NotificationDelivery.channel_id == channel_id)
    if cursor:
        stmt = stmt.where(
            older_than(cursor, NotificationDelivery.created_at, NotificationDelivery.id)
        )
    stmt = stmt.order_by(
        NotificationDelivery.created_at.desc(), NotificationDelivery.id.desc()
    ).limit(limit + 1)
    rows = list(await session.scalars(stmt))
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], encode_cursor(last.created_at, last.id) if last else None


async def recent_deliveries(
    *, session: AsyncSession, team_id: str, limit: int = 50
) -> list[tuple[NotificationDelivery, NotificationChannel]]:
    rows = await session.execute(
        select(NotificationDelivery, NotificationChannel)
        .join(NotificationChannel, NotificationChannel.id == NotificationDelivery.channel_id)
        .where(NotificationChannel.team_id == team_id)
        .order_by(NotificationDelivery.created_at.desc(), NotificationDelivery.id.desc())
        .limit(limit)
    )
    return [(d, c) for d, c in rows]


async def delete_channel(
    *, session: AsyncSession, principal: Principal, channel: NotificationChannel, ip: str | None
) -> None:
    """Remove a channel (its deliveries go with it) and audit it."""
    from devpush.audit.service import record

    await session.delete(channel)
    await record(
        session=session,
        principal=principal,
        action="notification.delete",
        resource_type="notification",
        resource_id=channel.id,
        team_id=channel.team_id,
        ip=ip,
        data={"channel": channel.kind},
    )
