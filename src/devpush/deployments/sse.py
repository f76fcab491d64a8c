"""Server-sent event streams: a deployment's status and log lines, and a project's events.

Deployment stream: `status` first (from PostgreSQL), then every stored `log` line after
Last-Event-ID, then new lines and status changes as they are published. Only log lines carry
an id (their sequence number), so a reconnecting client resumes exactly after the last line it
got; status events carry none and the current status is sent again on every connect.
Project stream: `ready` (carrying the stream position), then the project's events from its
Redis Stream, each with its stream id as the event id.

Access is checked by the routes before a stream starts, and again every CHECK_SECONDS with
the same loaders: a stream ends with an `end` event when its resource is deleted or the caller
loses access, and, for a deployment concluded other than `succeeded`, once its last lines are
out. Clients should close on `end` (an EventSource would otherwise reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sse_starlette import ServerSentEvent

from devpush import events
from devpush.auth.service import Principal
from devpush.db import utcnow
from devpush.deployments.access import load_deployment
from devpush.deployments.domain_events import status_payload
from devpush.errors import Forbidden, Invalid, NotFound
from devpush.logs.follow import stream_position
from devpush.logs.lines import StatusChange
from devpush.platform import Platform
from devpush.projects.access import load_project
from devpush.teams.access import Action

HEARTBEAT_SECONDS = 15.0
CHECK_SECONDS = 5.0
IDLE_SECONDS = 2.5
CLOSE_GRACE_SECONDS = 5.0  # late lines of a failed or canceled deployment still get through
RETRY_MS = 2000
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_RANK = {"prepare": 0, "deploy": 1, "finalize": 2, "fail": 3, "completed": 4}


def after_seq(last_event_id: str | None) -> int:
    """The sequence number a deployment stream resumes after."""
    if last_event_id is None or not last_event_id.strip():
        return 0
    value = last_event_id.strip()
    if not value.isdigit() or len(value) > 18:
        raise Invalid("Last-Event-ID must be the id of a log event (a non-negative integer)")
    return int(value)


def after_position(last_event_id: str | None) -> str | None:
    """The Redis Stream id a project stream resumes after."""
    if last_event_id is None or not last_event_id.strip():
        return None
    if not _STREAM_ID.match(last_event_id.strip()):
        raise Invalid("Last-Event-ID must be the id of an event of this stream (like 1700-0)")
    return last_event_id.strip()


def _end(reason: str) -> ServerSentEvent:
    return ServerSentEvent(event="end", data=json.dumps({"reason": reason}))


def _status(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(event="status", data=json.dumps(payload, default=str), retry=RETRY_MS)


def _closing(payload: dict[str, Any]) -> bool:
    return payload.get("status") == "completed" and payload.get("conclusion") != "succeeded"


class _Deployment:
    """What one deployment stream has told its client."""

    def __init__(self, p: Platform, principal: Principal, deployment_id: str) -> None:
        self.p, self.principal, self.deployment_id = p, principal, deployment_id
        self.status: dict[str, Any] = {}
        self.close_at: float | None = None

    async def load(self) -> dict[str, Any] | None:
        """The deployment's status, or None when it is gone or no longer visible."""
        async with self.p.sessions() as session:
            try:
                deployment, _ = await load_deployment(
                    session=session,
                    principal=self.principal,
                    deployment_id=self.deployment_id,
                    action=Action.read,
                )
            except (NotFound, Forbidden):
                return None
            payload = status_payload(deployment)
            if _closing(payload):
                self.close_after(deployment.concluded_at)
            return payload

    def close_after(self, concluded_at: datetime | None) -> None:
        if self.close_at is not None:
            return
        waited = (utcnow() - concluded_at).total_seconds() if concluded_at else 0.0
        loop = asyncio.get_running_loop()
        self.close_at = loop.time() + max(0.0, CLOSE_GRACE_SECONDS - waited)

    def newer(self, payload: dict[str, Any]) -> bool:
        """Statuses only move forward; an older one read late from the stream is skipped."""
        old = self.status
        if not old:
            return True
        rank, old_rank = _RANK.get(payload.get("status", ""), -1), _RANK.get(old["status"], -1)
        return rank > old_rank or (
            rank == old_rank
            and (
                payload.get("conclusion") != old.get("conclusion")
                # a live app that exits, restarts, or crashes (deployments/crashes.py)
                or payload.get("instance_health") != old.get("instance_health")
            )
        )

    def status_event(self, payload: dict[str, Any]) -> ServerSentEvent | None:
        if not self.newer(payload):
            return None
        self.status = payload
        if _closing(payload):
            self.close_after(None)
        return _status(payload)


async def deployment_events(
    *, p: Platform, principal: Principal, deployment_id: str, after: int
) -> AsyncIterator[ServerSentEvent]:
    state = _Deployment(p, principal, deployment_id)
    position = await stream_position(p.redis, events.deployment_stream(deployment_id))
    payload = await state.load()  # after the position: no status change falls in between
    if payload is None:
        yield _end("gone")
        return
    first = state.status_event(payload)
    assert first is not None
    yield first
    loop = asyncio.get_running_loop()
    next_check = loop.time() + CHECK_SECONDS
    last = after
    follow = p.log_store.follow(
        sessions=p.sessions,
        redis=p.redis,
        deployment_id=deployment_id,
        after_seq=after,
        position=position,
        idle=IDLE_SECONDS,
    )
    async with contextlib.aclosing(follow) as batches:
        async for batch in batches:
            for item in batch:
                if isinstance(item, StatusChange):
                    event = state.status_event(item.payload)
                    if event is not None:
                        yield event
                else:
                    last = item.seq
                    yield ServerSentEvent(
                        id=str(item.seq), event="log", data=json.dumps(item.to_json())
                    )
            now = loop.time()
            if now >= next_check or not batch:
                next_check = now + CHECK_SECONDS
                payload = await state.load()
                if payload is None:
                    yield _end("gone")
                    return
                event = state.status_event(payload)  # in case a status publish was lost
                if event is not None:
                    yield event
            if state.close_at is not None and now >= state.close_at:
                async for event in _remaining(p, deployment_id, last):
                    yield event
                yield _end("concluded")
                return


async def _remaining(p: Platform, deployment_id: str, last: int) -> AsyncIterator[ServerSentEvent]:
    while True:
        async with p.sessions() as session:
            lines = await p.log_store.since(
                session=session, deployment_id=deployment_id, after_seq=last
            )
        for line in lines:
            yield ServerSentEvent(id=str(line.seq), event="log", data=json.dumps(line.to_json()))
        if not lines:
            return
        last = lines[-1].seq


async def project_events(
    *, p: Platform, principal: Principal, project_id: str, after: str | None
) -> AsyncIterator[ServerSentEvent]:
    key = events.project_stream(project_id)
    position = after or await stream_position(p.redis, key)
    yield ServerSentEvent(
        id=position,
        event="ready",
        data=json.dumps({"project_id": project_id}),
        retry=RETRY_MS,
    )
    loop = asyncio.get_running_loop()
    next_check = loop.time() + CHECK_SECONDS
    while True:
        result = await p.redis.xread({key: position}, block=int(CHECK_SECONDS * 1000), count=500)
        for entry_id, fields in result[0][1] if result else []:
            position = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            kind = fields.get(b"type", b"event").decode()
            data = fields.get(b"data", b"{}").decode()
            yield ServerSentEvent(id=position, event=kind, data=data)
        now = loop.time()
        if now >= next_check or not result:
            next_check = now + CHECK_SECONDS
            if not await _project_visible(p, principal, project_id):
                yield _end("gone")
                return


async def _project_visible(p: Platform, principal: Principal, project_id: str) -> bool:
    async with p.sessions() as session:
        try:
            await load_project(
                session=session, principal=principal, project_id=project_id, action=Action.read
            )
        except (NotFound, Forbidden):
            return False
        return True
