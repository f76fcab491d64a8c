"""The live views' subscriber: deployment events onto the Redis Streams the SSE endpoints,
the dashboard and `git push` follow (devpush.events)."""

from __future__ import annotations

from devpush import events
from devpush.outbox.models import DomainEvent
from devpush.platform import Platform

ALIAS_MOVES = ("deployment.rolled_back", "deployment.promoted")


async def publish(p: Platform, event: DomainEvent) -> None:
    if event.project_id is None or event.deployment_id is None:
        return
    if event.type == "deployment.created":
        await events.publish_project(p.redis, event.project_id, event.type, event.data)
    elif event.type in ALIAS_MOVES:
        moved = {"deployment_id": event.deployment_id, "aliases": event.data.get("aliases", [])}
        await events.publish_project(p.redis, event.project_id, "alias", moved)
    else:
        await events.publish_deployment(p.redis, event.deployment_id, "status", event.data)
        await events.publish_project(p.redis, event.project_id, "deployment.status", event.data)
