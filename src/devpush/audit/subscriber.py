"""The audit log's subscriber: what happened to deployments and domains, next to what people
did (those entries are recorded by the routes, with who and from where)."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from devpush.audit.models import AuditEvent
from devpush.db import session_scope
from devpush.outbox.models import DomainEvent
from devpush.platform import Platform

KEPT = ("status", "conclusion", "error", "branch", "commit_sha", "trigger", "hostname", "reason")


async def record_event(p: Platform, event: DomainEvent) -> None:
    """One audit entry per event (its id derives from the event's: a redelivery adds none),
    unless the team is gone."""
    if event.team_id is None:
        return
    resource_type = "domain" if event.domain_id else "deployment"
    resource_id = event.domain_id or event.deployment_id
    try:
        async with session_scope(p.sessions) as session:
            await session.execute(
                insert(AuditEvent)
                .values(
                    id=f"event-{event.id}",
                    team_id=event.team_id,
                    action=event.type,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    data={k: v for k, v in event.data.items() if k in KEPT and v is not None},
                    created_at=event.created_at,
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
    except IntegrityError:  # the team is gone: the only key this insert can break
        return
