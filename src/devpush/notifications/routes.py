"""Notification routes: a team's channels (create, list, read, change, delete), a test send,
and each channel's delivery log. Reading needs team membership; the rest Action.manage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from devpush.api.deps import PlatformDep, SecretAnswer, SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.notifications import delivery, service
from devpush.notifications.models import NotificationChannel, NotificationDelivery
from devpush.notifications.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelRead,
    ChannelUpdate,
    DeliveryPage,
    DeliveryRead,
)
from devpush.teams.access import Action, load_team

router = APIRouter(tags=["notifications"])
Id = Annotated[str, Path(max_length=32)]
TeamRef = Annotated[str, Path(max_length=63)]


def channel_read(channel: NotificationChannel) -> ChannelRead:
    return ChannelRead(
        id=channel.id,
        team_id=channel.team_id,
        channel=channel.kind,
        target=service.shown_target(channel),
        events=channel.events,
        projects=channel.project_ids,
        environments=channel.environments,
        enabled=channel.enabled,
        state=channel.state,
        consecutive_failures=channel.consecutive_failures,
        created_by=channel.created_by,
        created_at=channel.created_at,
    )


def delivery_read(row: NotificationDelivery) -> DeliveryRead:
    return DeliveryRead(
        id=row.id,
        channel_id=row.channel_id,
        event_id=row.event_id,
        event=row.event_type,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        response_code=row.response_code,
        created_at=row.created_at,
        last_attempt_at=row.last_attempt_at,
        next_attempt_at=row.next_attempt_at,
    )


@router.get("/teams/{team}/notifications", response_model=list[ChannelRead])
async def list_channels(
    team: TeamRef, session: SessionDep, principal: PrincipalDep
) -> list[ChannelRead]:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.read)
    return [channel_read(c) for c in await service.list_channels(session=session, team_id=row.id)]


@router.post(
    "/teams/{team}/notifications",
    response_model=ChannelCreated,
    status_code=201,
    dependencies=[SecretAnswer],  # the webhook's secret, shown this once
)
async def create_channel(
    team: TeamRef,
    body: ChannelCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ChannelCreated:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.manage)
    channel, secret = await service.create_channel(
        session=session,
        settings=platform.settings,
        team_id=row.id,
        body=body,
        created_by=principal.user_id,
    )
    await record(
        session=session,
        principal=principal,
        action="notification.create",
        resource_type="notification",
        resource_id=channel.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"channel": channel.kind, "events": channel.events},
    )
    return ChannelCreated(**channel_read(channel).model_dump(), secret=secret)


@router.get("/notifications/{channel_id}", response_model=ChannelRead)
async def get_channel(channel_id: Id, session: SessionDep, principal: PrincipalDep) -> ChannelRead:
    channel = await service.load_channel(
        session=session, principal=principal, channel_id=channel_id, action=Action.read
    )
    return channel_read(channel)


@router.patch("/notifications/{channel_id}", response_model=ChannelRead)
async def update_channel(
    channel_id: Id,
    body: ChannelUpdate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ChannelRead:
    channel = await service.load_channel(
        session=session, principal=principal, channel_id=channel_id, action=Action.manage
    )
    changed = await service.update_channel(
        session=session, settings=platform.settings, channel=channel, body=body
    )
    await record(
        session=session,
        principal=principal,
        action="notification.update",
        resource_type="notification",
        resource_id=channel.id,
        team_id=channel.team_id,
        ip=client_ip(request),
        data={"changed": changed},
    )
    return channel_read(channel)


@router.delete("/notifications/{channel_id}", status_code=204)
async def delete_channel(
    channel_id: Id, request: Request, session: SessionDep, principal: PrincipalDep
) -> Response:
    channel = await service.load_channel(
        session=session, principal=principal, channel_id=channel_id, action=Action.manage
    )
    await service.delete_channel(
        session=session, principal=principal, channel=channel, ip=client_ip(request)
    )
    return Response(status_code=204)


@router.post("/notifications/{channel_id}/test", response_model=DeliveryRead)
async def test_channel(
    channel_id: Id, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> DeliveryRead:
    """Send a `test` event now and answer how it went (`status`, `last_error`)."""
    channel = await service.load_channel(
        session=session, principal=principal, channel_id=channel_id, action=Action.manage
    )
    await session.commit()  # the test is sent and logged in transactions of its own
    return delivery_read(await delivery.send_test(platform, channel.id))


@router.get("/notifications/{channel_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    channel_id: Id,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DeliveryPage:
    channel = await service.load_channel(
        session=session, principal=principal, channel_id=channel_id, action=Action.read
    )
    rows, next_cursor = await service.deliveries_page(
        session=session, channel_id=channel.id, limit=limit, cursor=cursor
    )
    return DeliveryPage(items=[delivery_read(r) for r in rows], next_cursor=next_cursor)
