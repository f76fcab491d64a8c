"""The audit log of a team, readable by its admins, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from devpush.api.deps import SessionDep
from devpush.audit.models import AuditEvent
from devpush.auth.deps import PrincipalDep
from devpush.pagination import encode_cursor, older_than
from devpush.teams.access import Action, load_team

router = APIRouter(tags=["audit"])


class AuditRead(BaseModel):
    id: str
    action: str
    resource_type: str
    resource_id: str | None
    actor_user_id: str | None
    actor_token_id: str | None
    ip: str | None
    data: dict[str, Any]
    created_at: datetime


class AuditPage(BaseModel):
    items: list[AuditRead]
    next_cursor: str | None


@router.get("/teams/{team}/audit", response_model=AuditPage)
async def team_audit(
    team: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.manage)
    stmt = select(AuditEvent).where(AuditEvent.team_id == row.id)
    if cursor:
        stmt = stmt.where(older_than(cursor, AuditEvent.created_at, AuditEvent.id))
    stmt = stmt.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit + 1)
    events = list(await session.scalars(stmt))
    last = events[limit - 1] if len(events) > limit else None
    next_cursor = encode_cursor(last.created_at, last.id) if last else None
    return AuditPage(
        items=[AuditRead.model_validate(e, from_attributes=True) for e in events[:limit]],
        next_cursor=next_cursor,
    )
