"""Recording audit events. Callers pass the principal and the request's address."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.audit.models import AuditEvent
from devpush.auth.service import Principal


async def record(
    *,
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    resource_type: str,
    resource_id: str | None,
    team_id: str | None,
    ip: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            team_id=team_id,
            actor_user_id=principal.user_id if principal else None,
            actor_token_id=principal.token_id if principal else None,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            data=data or {},
            ip=ip,
        )
    )
