"""The team's notifications page: its channels (target masked, events, scope, state), adding
one (a webhook's secret shown once), removing one, sending a test, and the delivery log."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.errors import DevpushError, NotFound
from devpush.notifications import delivery, service
from devpush.notifications.schemas import ChannelCreate
from devpush.outbox.names import PUBLIC_EVENTS
from devpush.projects import service as projects
from devpush.teams.access import Action, load_team
from devpush.teams.models import ROLE_RANK, Role, Team
from devpush.web.common import (
    Viewer,
    ViewerDep,
    field_errors,
    flash,
    form_text,
    page_router,
    platform_of,
    redirect,
    render,
)

router = page_router()


async def _context(viewer: Viewer, session: AsyncSession, team: Team) -> dict[str, Any]:
    role = viewer.role_in(team.id)
    channels = await service.list_channels(session=session, team_id=team.id)
    team_projects = await projects.list_projects(session=session, team_id=team.id)
    names = {p.id: p.name for p in team_projects}
    return {
        "team": team,
        "can_manage": role is not None and ROLE_RANK[role] >= ROLE_RANK[Role.admin],
        "channels": [
            {
                "row": c,
                "target": service.shown_target(c),
                "scope": [names.get(p, p) for p in c.project_ids] + c.environments,
            }
            for c in channels
        ],
        "deliveries": await service.recent_deliveries(session=session, team_id=team.id),
        "projects": team_projects,
        "events": PUBLIC_EVENTS,
        "kinds": ("webhook", "slack", "discord", "email"),
        "errors": {},
        "values": {},
        "created": None,
        "secret": None,
    }


@router.get("/t/{team}/notifications")
async def notifications_page(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.read
    )
    return render(request, "teams/notifications.html", **await _context(viewer, session, row))


@router.post("/t/{team}/notifications")
async def add_channel(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.manage
    )
    form = await request.form()
    kind = form_text(form, "channel", 20)
    target = form_text(form, "target", 2000).strip()
    events = [e for e in form.getlist("events") if isinstance(e, str)][:20]
    chosen = [p for p in form.getlist("projects") if isinstance(p, str)][:100]
    environments = form_text(form, "environments", 2000)
    values = {
        "channel": kind,
        "target": target,
        "events": events,
        "projects": chosen,
        "environments": environments,
    }
    try:
        body = ChannelCreate(
            channel=kind,
            url=None if kind == "email" else target or None,
            email=(target or None) if kind == "email" else None,
            events=events,
            projects=chosen,
            environments=[e.strip() for e in environments.split(",") if e.strip()],
        )
        channel, secret = await service.create_channel(
            session=session,
            settings=platform_of(request).settings,
            team_id=row.id,
            body=body,
            created_by=viewer.me.id,
        )
    except ValidationError as exc:
        errors = field_errors(exc)
        errors["target"] = errors.pop("url", errors.pop("email", errors.get("target", "")))
        return await _invalid(
            request, viewer, session, row, {k: v for k, v in errors.items() if v}, values
        )
    except DevpushError as exc:  # raised before anything was written
        return await _invalid(request, viewer, session, row, {"__all__": exc.message}, values)
    await record(
        session=session,
        principal=viewer.principal,
        action="notification.create",
        resource_type="notification",
        resource_id=channel.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"channel": channel.kind, "events": channel.events},
    )
    context = await _context(viewer, session, row)
    context.update(created=channel, secret=secret)
    # The page itself, not a redirect: the secret is shown this once and kept nowhere.
    return render(
        request, "teams/notifications.html", headers={"Cache-Control": "no-store"}, **context
    )


async def _invalid(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    team: Team,
    errors: dict[str, str],
    values: dict[str, Any],
) -> Response:
    context = await _context(viewer, session, team)
    context.update(errors=errors, values=values)
    return render(request, "teams/notifications.html", status_code=422, **context)


async def _channel(viewer: Viewer, session: AsyncSession, team: Team, channel_id: str) -> Any:
    channel = await service.load_channel(
        session=session, principal=viewer.principal, channel_id=channel_id, action=Action.manage
    )
    if channel.team_id != team.id:
        raise NotFound("no such notification channel")
    return channel


@router.post("/t/{team}/notifications/{channel_id}/delete")
async def delete_channel(
    team: str, channel_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.manage
    )
    channel = await _channel(viewer, session, row, channel_id)
    await service.delete_channel(
        session=session, principal=viewer.principal, channel=channel, ip=client_ip(request)
    )
    flash(request, f"The {channel.kind} channel is removed.")
    return redirect(request, f"/t/{row.slug}/notifications")


@router.post("/t/{team}/notifications/{channel_id}/test")
async def test_channel(
    team: str, channel_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.manage
    )
    channel = await _channel(viewer, session, row, channel_id)
    await session.commit()
    sent = await delivery.send_test(platform_of(request), channel.id)
    if sent.status == "succeeded":
        flash(request, "The test notification was delivered.")
    else:
        flash(request, f"The test notification was not delivered: {sent.last_error}", "error")
    return redirect(request, f"/t/{row.slug}/notifications")
