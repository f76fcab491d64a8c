"""Write an event into the current transaction (it commits or rolls back with the change)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import utcnow
from devpush.outbox.models import DomainEvent

CHANNEL = "devpush_events"  # NOTIFY'd with each event: delivered to listeners at commit
_NOTIFY = text(f"NOTIFY {CHANNEL}")


def row(
    type_: str,
    *,
    team_id: str | None = None,
    project_id: str | None = None,
    deployment_id: str | None = None,
    domain_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "type": type_,
        "team_id": team_id,
        "project_id": project_id,
        "deployment_id": deployment_id,
        "domain_id": domain_id,
        "data": data or {},
        "created_at": utcnow(),
    }


async def emit(session: AsyncSession, type_: str, **fields: Any) -> None:
    """Record an event in `session`'s transaction."""
    await session.execute(insert(DomainEvent), [row(type_, **fields)])
    await session.execute(_NOTIFY)


def emit_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """The same from inside a flush (a session event hook), on its connection."""
    if rows:
        connection.execute(insert(DomainEvent), rows)
        connection.execute(_NOTIFY)
